package org.edgeretina.core

import kotlin.math.floor

/**
 * Benchmark mode: what `adb shell am start ... --es model M --ei runs N --ei threads T --es delegate cpu|gpu`
 * asks for, and the JSON result the app writes (schema `edgeretina.android-bench/1`), which
 * `edgeretina bench --device android` pulls and parses (benchmarks/runners/android.py).
 */
class BenchmarkRequest(
    val model: String,
    val runs: Int,
    val warmup: Int,
    val threads: Int,
    val delegate: String,
    val runId: String
) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        "model" to model, "runs" to runs, "warmup" to warmup, "threads" to threads, "delegate" to delegate,
        "run_id" to runId
    )

    companion object {
        val DELEGATES = listOf("cpu", "gpu")
        const val DEFAULT_RUNS = 50
        const val DEFAULT_WARMUP = 5
        const val DEFAULT_THREADS = 4

        /** Validate intent extras (null = not given). Problems are one-line [CoreException]s. */
        fun of(model: String?, runs: Int?, warmup: Int?, threads: Int?, delegate: String?, runId: String?): BenchmarkRequest {
            if (model.isNullOrEmpty()) throw CoreException("benchmark: --es model <path to .tflite> is required")
            val r = runs ?: DEFAULT_RUNS
            val w = warmup ?: DEFAULT_WARMUP
            val t = threads ?: DEFAULT_THREADS
            val d = delegate ?: "cpu"
            if (r < 1) throw CoreException("benchmark: runs must be >= 1 (got $r)")
            if (w < 0) throw CoreException("benchmark: warmup must be >= 0 (got $w)")
            if (t < 1) throw CoreException("benchmark: threads must be >= 1 (got $t)")
            if (d !in DELEGATES) throw CoreException("benchmark: delegate must be cpu or gpu (got '$d')")
            val id = if (runId.isNullOrEmpty()) "latest" else runId
            if (!SAFE_ID.matches(id)) throw CoreException("benchmark: run_id may hold only letters, digits, '-', '_' and '.'")
            return BenchmarkRequest(model, r, w, t, d, id)
        }

        private val SAFE_ID = Regex("[A-Za-z0-9._-]{1,64}")
    }
}

/** Latency statistics over batch-1 samples, with numpy's default (linear) percentiles. */
class LatencyStats(val p50: Double, val p90: Double, val mean: Double, val min: Double, val max: Double, val n: Int) {
    companion object {
        fun of(samplesMs: DoubleArray): LatencyStats {
            if (samplesMs.isEmpty()) throw CoreException("no latency samples")
            val s = samplesMs.copyOf()
            java.util.Arrays.sort(s)
            var sum = 0.0
            for (v in s) sum += v
            return LatencyStats(percentile(s, 50.0), percentile(s, 90.0), sum / s.size, s[0], s[s.size - 1], s.size)
        }

        /** numpy.percentile(a, q) with method="linear" on an already sorted array. */
        fun percentile(sorted: DoubleArray, q: Double): Double {
            val pos = q / 100.0 * (sorted.size - 1)
            val i = floor(pos).toInt()
            val j = minOf(i + 1, sorted.size - 1)
            val t = pos - i
            val a = sorted[i]
            val b = sorted[j]
            return if (t >= 0.5) b - (b - a) * (1 - t) else a + (b - a) * t
        }
    }
}

/** Facts about the phone, filled from android.os.Build on the device. */
class DeviceInfo(
    val manufacturer: String,
    val model: String,
    val device: String,
    val soc: String,
    val androidVersion: String,
    val sdkInt: Int,
    val abi: String
) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        "manufacturer" to manufacturer, "model" to model, "device" to device, "soc" to soc,
        "android_version" to androidVersion, "sdk_int" to sdkInt, "abi" to abi
    )
}

/** The benchmark result file. [error] non-null means the run failed on the phone (status "error"). */
class BenchmarkResult(
    val request: BenchmarkRequest,
    val device: DeviceInfo,
    val samplesMs: DoubleArray,
    val delegateApplied: String,
    val input: TensorInfo?,
    val output: TensorInfo?,
    val modelBytes: Long,
    val modelSha256: String?,
    val loadMs: Double?,
    val runtime: String,
    val appVersion: String,
    val timestamp: String,
    val error: String? = null
) {
    val stats: LatencyStats? get() = if (samplesMs.isEmpty()) null else LatencyStats.of(samplesMs)

    fun toMap(): Map<String, Any?> {
        val st = stats
        val m = LinkedHashMap<String, Any?>()
        m["schema"] = SCHEMA
        m["status"] = if (error == null) "ok" else "error"
        if (error != null) m["error"] = error
        m["run_id"] = request.runId
        m["model"] = request.model
        m["model_bytes"] = modelBytes
        m["model_sha256"] = modelSha256
        m["delegate"] = request.delegate
        m["delegate_applied"] = delegateApplied
        m["threads"] = request.threads
        m["warmup"] = request.warmup
        m["runs"] = request.runs
        m["n"] = samplesMs.size
        m["p50_ms"] = st?.p50
        m["p90_ms"] = st?.p90
        m["mean_ms"] = st?.mean
        m["min_ms"] = st?.min
        m["max_ms"] = st?.max
        m["load_ms"] = loadMs
        m["samples_ms"] = samplesMs.toList()
        m["input"] = input?.toMap()
        m["output"] = output?.toMap()
        m["device"] = device.toMap()
        m["runtime"] = runtime
        m["app_version"] = appVersion
        m["timestamp"] = timestamp
        return m
    }

    fun toJson(): String = Json.write(toMap(), indent = 2) + "\n"

    /** One logcat line: tag [LOG_TAG], message "EDGERETINA_BENCH <compact json>". */
    fun logLine(): String = LOG_PREFIX + Json.write(toMap())

    companion object {
        const val SCHEMA = "edgeretina.android-bench/1"
        const val LOG_TAG = "EdgeRetinaBench"
        const val LOG_PREFIX = "EDGERETINA_BENCH "
        /** Where the app writes results, relative to its files dirs (internal and external). */
        const val RESULT_DIR = "bench"

        fun fileName(runId: String) = "$runId.json"
    }
}
