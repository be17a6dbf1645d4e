plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.edgeretina.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.edgeretina.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
    androidResources {
        // a .tflite in assets/ must stay uncompressed so it can be memory-mapped
        noCompress += "tflite"
    }
    buildFeatures {
        buildConfig = true
    }
}

dependencies {
    implementation(project(":core"))
    // LiteRT (formerly TensorFlow Lite), Interpreter API: CPU through XNNPACK, and the GPU delegate.
    implementation("com.google.ai.edge.litert:litert:1.4.2")
    implementation("com.google.ai.edge.litert:litert-gpu:1.4.2")
    implementation("com.google.ai.edge.litert:litert-gpu-api:1.4.2")
    // FileProvider, for full-resolution camera photos
    implementation("androidx.core:core:1.13.1")
}
