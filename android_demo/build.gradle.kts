// Versions are pinned in one place. AGP 8.7 needs Gradle >= 8.9 (see gradle/wrapper/gradle-wrapper.properties).
plugins {
    id("com.android.application") version "8.7.3" apply false
    id("org.jetbrains.kotlin.android") version "2.0.21" apply false
    id("org.jetbrains.kotlin.jvm") version "2.0.21" apply false
}
