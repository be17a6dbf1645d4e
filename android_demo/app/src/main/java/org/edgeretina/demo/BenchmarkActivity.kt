package org.edgeretina.demo

import android.app.Activity
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.widget.TextView
import org.edgeretina.core.BenchmarkRequest
import org.edgeretina.core.BenchmarkResult
import org.edgeretina.core.CoreException
import org.edgeretina.core.ImageOutputs
import org.edgeretina.core.NpyFloats
import org.edgeretina.core.RgbImage
import java.io.File
import java.security.MessageDigest
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone

/**
 * Benchmark mode:
 *
 *     adb shell am start -W -n org.edgeretina.demo/.BenchmarkActivity \
 *         --es model /data/local/tmp/edgeretina/model_int8.tflite \
 *         --ei runs 50 --ei warmup 5 --ei threads 4 --es delegate cpu --es run_id r1 \
 *         [--es inputs /data/local/tmp/edgeretina/inputs.npy]
 *
 * Loads the model (refusing one without edgeretina metadata), prepares one input tensor from a synthetic
 * fundus-like image through the model's own preprocessing, runs `warmup` untimed and `runs` timed batch-1
 * inferences; with `inputs` (float32 .npy of preprocessed images, N×H×W×3) it also runs the model on every
 * one of them and returns the per-image outputs (raw output tensor, probabilities, decision, borderline),
 * so the host scores the phone's own numbers. It writes the result JSON (schema edgeretina.android-bench/1) to
 * `<external files>/bench/<run_id>.json` and `<files>/bench/<run_id>.json`, and one logcat line
 * (tag EdgeRetinaBench). Failures are written the same way with "status": "error", so the host never
 * waits for a result that will not come. The activity finishes itself when done.
 */
class BenchmarkActivity : Activity() {

    private lateinit var status: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        status = TextView(this)
        status.setPadding(32, 32, 32, 32)
        status.text = "edgeretina benchmark running…"
        setContentView(status)
        val extras = intent.extras
        val request = try {
            BenchmarkRequest.of(
                extras?.getString("model"),
                intOrNull(extras, "runs"), intOrNull(extras, "warmup"), intOrNull(extras, "threads"),
                extras?.getString("delegate"), extras?.getString("run_id"), extras?.getString("inputs")
            )
        } catch (e: CoreException) {
            val fallback = BenchmarkRequest("", 1, 0, 1, "cpu", extras?.getString("run_id")?.takeIf { SAFE.matches(it) } ?: "latest")
            finishWith(failure(fallback, e.message ?: "bad request"))
            return
        }
        Thread({ finishWith(runBenchmark(request)) }, "edgeretina-bench").start()
    }

    private fun intOrNull(extras: Bundle?, key: String): Int? =
        if (extras != null && extras.containsKey(key)) extras.getInt(key) else null

    private fun runBenchmark(req: BenchmarkRequest): BenchmarkResult {
        val file = File(req.model)
        var classifier: LiteRtClassifier? = null
        return try {
            classifier = LiteRtClassifier.open(file, Backend.of(req.delegate), req.threads)
            val size = classifier.model.pipeline.inputSize ?: 224
            classifier.load(classifier.model.prepare(syntheticFundus(size * 2)))
            for (i in 0 until req.warmup) classifier.invoke()
            val samples = DoubleArray(req.runs)
            for (i in 0 until req.runs) {
                val t0 = SystemClock.elapsedRealtimeNanos()
                classifier.invoke()
                samples[i] = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
            }
            val outputs = req.inputs?.let { path ->
                NpyFloats.open(File(path)).use { inputs ->
                    val c = classifier!!
                    ImageOutputs.score(c.model, inputs) { tensor -> c.runBytes(tensor) }
                }
            }
            BenchmarkResult(
                req, DeviceFacts.read(), samples, classifier.delegateApplied, classifier.model.input,
                classifier.model.output, file.length(), sha256(file), classifier.loadMs, runtime(),
                BuildConfig.VERSION_NAME, now(), outputs = outputs
            )
        } catch (e: Throwable) {
            failure(req, (e.message ?: e.javaClass.simpleName).lineSequence().first(), file)
        } finally {
            classifier?.close()
        }
    }

    private fun failure(req: BenchmarkRequest, message: String, file: File? = null) = BenchmarkResult(
        req, DeviceFacts.read(), DoubleArray(0), "none", null, null, file?.length() ?: 0L, null, null, runtime(),
        BuildConfig.VERSION_NAME, now(), error = message
    )

    private fun finishWith(result: BenchmarkResult) {
        val json = result.toJson()
        val name = BenchmarkResult.fileName(result.request.runId)
        for (dir in listOf(getExternalFilesDir(null), filesDir)) {
            if (dir == null) continue
            try {
                val d = File(dir, BenchmarkResult.RESULT_DIR)
                d.mkdirs()
                val tmp = File(d, "$name.part")
                tmp.writeText(json)
                if (!tmp.renameTo(File(d, name))) tmp.delete()
            } catch (e: Exception) {
                Log.w(BenchmarkResult.LOG_TAG, "cannot write result to $dir: ${e.message}")
            }
        }
        val line = result.logLine()
        // logcat truncates long lines: log the samples only when they fit
        Log.i(BenchmarkResult.LOG_TAG, if (line.length < 3500) line else BenchmarkResult.LOG_PREFIX +
            "{\"run_id\": \"${result.request.runId}\", \"status\": \"${if (result.error == null) "ok" else "error"}\", " +
            "\"p50_ms\": ${result.stats?.p50}, \"p90_ms\": ${result.stats?.p90}, \"mean_ms\": ${result.stats?.mean}}")
        runOnUiThread {
            status.text = if (result.error == null) {
                "done: p50 %.2f ms, p90 %.2f ms over %d runs (%s)".format(
                    result.stats?.p50, result.stats?.p90, result.samplesMs.size, result.delegateApplied)
            } else {
                "failed: ${result.error}"
            }
            finish()
        }
    }

    /** A mid-grey disc on black at [size] px: latency does not depend on pixel values, only shapes. */
    private fun syntheticFundus(size: Int): RgbImage {
        val d = ByteArray(size * size * 3)
        val c = size / 2
        val r2 = (size * 0.45) * (size * 0.45)
        for (y in 0 until size) for (x in 0 until size) {
            val dx = (x - c).toDouble()
            val dy = (y - c).toDouble()
            if (dx * dx + dy * dy <= r2) {
                val o = (y * size + x) * 3
                d[o] = (150 + (x % 40)).toByte()
                d[o + 1] = (70 + (y % 30)).toByte()
                d[o + 2] = 30
            }
        }
        return RgbImage(size, size, d)
    }

    private fun sha256(file: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { s ->
            val buf = ByteArray(1 shl 16)
            while (true) {
                val n = s.read(buf)
                if (n < 0) break
                md.update(buf, 0, n)
            }
        }
        return md.digest().joinToString("") { "%02x".format(it) }
    }

    private fun runtime(): String = try {
        "LiteRT " + org.tensorflow.lite.TensorFlowLite.runtimeVersion() + " (Interpreter API)"
    } catch (e: Throwable) {
        "LiteRT (Interpreter API)"
    }

    private fun now(): String {
        val f = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US)
        f.timeZone = TimeZone.getTimeZone("UTC")
        return f.format(Date())
    }

    companion object {
        private val SAFE = Regex("[A-Za-z0-9._-]{1,64}")
    }
}
