// Plain Kotlin/JVM: no Android dependency, so the same code is unit-tested on any JVM.
// On machines without Gradle the Python test suite builds it with kotlinc (tests/test_android_core.py).
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}
