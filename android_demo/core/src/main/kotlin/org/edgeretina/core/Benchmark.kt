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
    val runId: String,
    /** Optional `--es inputs <file.npy>`: float32 (N, H, W, 3) model inputs to score one by one (issue 17). */
    val inputs: String? = null
) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        "model" to model, "runs" to runs, "warmup" to warmup, "threads" to threads, "delegate" to delegate,
        "run_id" to runId, "inputs" to inputs
    )

    companion object {
        val DELEGATES = listOf("cpu", "gpu")
        const val DEFAULT_RUNS = 50
        const val DEFAULT_WARMUP = 5
        const val DEFAULT_THREADS = 4

        /** Validate intent extras (null = not given). Problems are one-line [CoreException]s. */
        fun of(model: String?, runs: Int?, warmup: Int?, threads: Int?, delegate: String?, runId: String?,
               inputs: String? = null): BenchmarkRequest {
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
            if (inputs != null && !inputs.endsWith(".npy")) {
                throw CoreException("benchmark: inputs must be a .npy file of float32 model inputs (got '$inputs')")
            }
            return BenchmarkRequest(model, r, w, t, d, id, if (inputs.isNullOrEmpty()) null else inputs)
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
    val error: String? = null,
    /** The per-image outputs for `inputs` (null when the request had none). */
    val outputs: ImageOutputs? = null
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
        if (outputs != null) m["outputs"] = outputs.toMap()
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

/**
 * The model's own outputs on the phone for a batch of inputs the host sent (`edgeretina bench --device
 * android` then computes AUROC and decision flips from them). [raw]: the output tensor's values exactly as
 * the interpreter wrote them (integers for a quantised output, float32 values otherwise), one row per image;
 * [predictions]: what the app makes of them (probabilities, decision, borderline flag).
 */
class ImageOutputs(val source: String, val dtype: String, val raw: List<List<Number>>, val predictions: List<Prediction>) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        "inputs" to source, "n" to raw.size, "dtype" to dtype, "raw" to raw,
        "probabilities" to predictions.map { it.probabilities.toList() },
        "decisions" to predictions.map { it.decision },
        "borderline" to predictions.map { it.borderline }
    )

    companion object {
        /**
         * Score every image of [inputs] with [invoke] (the interpreter: input tensor bytes -> output tensor
         * bytes), preparing each input exactly as the app does (int8 models: quantised with the input tensor's
         * scale and zero point) and reading the output with the model's own post-processing.
         */
        fun score(model: EdgeModel, inputs: NpyFloats, invoke: (ByteArray) -> ByteArray): ImageOutputs {
            val shape = model.input.shape
            val want = shape.drop(1)
            if (inputs.shape.drop(1) != want) {
                throw CoreException("${inputs.source}: inputs have shape ${inputs.shape} but the model takes " +
                    "(N, ${want.joinToString(", ")})")
            }
            val raw = ArrayList<List<Number>>(inputs.count)
            val preds = ArrayList<Prediction>(inputs.count)
            val post = model.postprocessor
            for (i in 0 until inputs.count) {
                val out = invoke(InputTensor.from(inputs.read(i), model.input).toBytes())
                raw.add(rawValues(out, model.output.type))
                preds.add(post.fromBytes(out))
            }
            return ImageOutputs(inputs.source, model.output.type.dtype, raw, preds)
        }

        fun rawValues(out: ByteArray, type: TensorType): List<Number> = when (type) {
            TensorType.FLOAT32 -> {
                val bb = java.nio.ByteBuffer.wrap(out).order(java.nio.ByteOrder.LITTLE_ENDIAN)
                List(out.size / 4) { bb.getFloat(4 * it).toDouble() }
            }
            TensorType.INT8, TensorType.UINT8 -> Quant.ints(out, type).toList()
            else -> throw CoreException("output tensor type ${type.dtype} is not supported")
        }
    }
}

/**
 * A little-endian float32 `.npy` file (numpy format 1.0/2.0/3.0, C order), read one leading-axis item at a
 * time so that hundreds of 224x224x3 inputs never sit in the Java heap together.
 */
class NpyFloats private constructor(private val file: java.io.RandomAccessFile, val source: String,
                                    val shape: List<Int>, private val dataOffset: Long) : java.io.Closeable {
    val count: Int get() = shape[0]
    val itemSize: Int get() = shape.drop(1).fold(1) { a, b -> a * b }

    fun read(i: Int): FloatArray {
        if (i < 0 || i >= count) throw CoreException("$source: item $i of $count")
        val bytes = ByteArray(itemSize * 4)
        file.seek(dataOffset + i.toLong() * bytes.size)
        file.readFully(bytes)
        val bb = java.nio.ByteBuffer.wrap(bytes).order(java.nio.ByteOrder.LITTLE_ENDIAN)
        return FloatArray(itemSize) { bb.getFloat(4 * it) }
    }

    override fun close() = file.close()

    companion object {
        fun open(f: java.io.File): NpyFloats {
            val raf = try {
                java.io.RandomAccessFile(f, "r")
            } catch (e: java.io.IOException) {
                throw CoreException("${f.path}: cannot read the inputs (${e.message})")
            }
            try {
                val magic = ByteArray(8)
                raf.readFully(magic)
                if (magic[0] != 0x93.toByte() || String(magic, 1, 5, Charsets.US_ASCII) != "NUMPY") {
                    throw CoreException("${f.path}: not a .npy file")
                }
                val major = magic[6].toInt()
                val hlen = if (major == 1) {
                    val b = ByteArray(2); raf.readFully(b); (b[0].toInt() and 0xff) or ((b[1].toInt() and 0xff) shl 8)
                } else {
                    val b = ByteArray(4); raf.readFully(b)
                    java.nio.ByteBuffer.wrap(b).order(java.nio.ByteOrder.LITTLE_ENDIAN).int
                }
                val hb = ByteArray(hlen)
                raf.readFully(hb)
                val header = String(hb, Charsets.ISO_8859_1)
                val descr = Regex("'descr':\\s*'([^']*)'").find(header)?.groupValues?.get(1)
                val fortran = Regex("'fortran_order':\\s*(True|False)").find(header)?.groupValues?.get(1)
                val shapeText = Regex("'shape':\\s*\\(([^)]*)\\)").find(header)?.groupValues?.get(1)
                if (descr != "<f4" || fortran != "False" || shapeText == null) {
                    throw CoreException("${f.path}: expected a C-order little-endian float32 array, header $header".trim())
                }
                val shape = shapeText.split(",").map { it.trim() }.filter { it.isNotEmpty() }.map { it.toInt() }
                if (shape.size < 2) throw CoreException("${f.path}: expected (N, ...) inputs, shape $shape")
                val off = raf.filePointer
                val need = off + shape.fold(1L) { a, b -> a * b } * 4
                if (raf.length() < need) throw CoreException("${f.path}: truncated (${raf.length()} of $need bytes)")
                return NpyFloats(raf, f.path, shape, off)
            } catch (e: CoreException) {
                raf.close()
                throw e
            }
        }
    }
}
