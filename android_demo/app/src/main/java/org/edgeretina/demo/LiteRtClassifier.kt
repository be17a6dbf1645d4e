package org.edgeretina.demo

import android.os.SystemClock
import org.edgeretina.core.EdgeModel
import org.edgeretina.core.InputTensor
import org.edgeretina.core.Prediction
import org.edgeretina.core.RgbImage
import org.edgeretina.core.TfliteFile
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import java.io.Closeable
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/** Which LiteRT backend runs the model. */
enum class Backend(val id: String) {
    CPU("cpu"), GPU("gpu");

    companion object {
        fun of(id: String): Backend = values().firstOrNull { it.id == id }
            ?: throw IllegalArgumentException("delegate must be cpu or gpu (got '$id')")
    }
}

/** One classification: the prediction plus where the time went. */
class Classification(val prediction: Prediction, val preprocessMs: Double, val inferenceMs: Double)

/**
 * An edgeretina .tflite on LiteRT's Interpreter API. The model's own metadata (read by the plain-Kotlin
 * core module) gives labels, preprocessing, threshold and output kind; a model without it, or with a
 * preprocessing step the app does not implement, is refused by [EdgeModel.open] with a one-line message.
 *
 * CPU = XNNPACK with [threads] threads. GPU = the GPU delegate with the options LiteRT recommends for this
 * device; if the device is not on the delegate's compatibility list, [open] fails with a clear message
 * rather than silently running on the CPU.
 */
class LiteRtClassifier private constructor(
    val file: File,
    val model: EdgeModel,
    val backend: Backend,
    val threads: Int,
    private val interpreter: Interpreter,
    private val gpu: GpuDelegate?,
    val loadMs: Double
) : Closeable {

    /** What actually runs: "xnnpack" or "gpu". */
    val delegateApplied: String get() = if (gpu != null) "gpu" else "xnnpack"

    private val input: ByteBuffer = ByteBuffer.allocateDirect(interpreter.getInputTensor(0).numBytes())
        .order(ByteOrder.nativeOrder())
    private val output: ByteBuffer = ByteBuffer.allocateDirect(interpreter.getOutputTensor(0).numBytes())
        .order(ByteOrder.nativeOrder())

    /** Preprocess exactly as Python does, run once, post-process (dequantise, activate, threshold). */
    fun classify(photo: RgbImage): Classification {
        val t0 = SystemClock.elapsedRealtimeNanos()
        val tensor = model.prepare(photo)
        val t1 = SystemClock.elapsedRealtimeNanos()
        val raw = run(tensor)
        val t2 = SystemClock.elapsedRealtimeNanos()
        return Classification(model.postprocessor.fromBytes(raw), (t1 - t0) / 1e6, (t2 - t1) / 1e6)
    }

    /** One batch-1 inference on a prepared tensor; returns the raw output bytes. */
    fun run(tensor: InputTensor): ByteArray {
        load(tensor)
        invoke()
        val out = ByteArray(output.capacity())
        output.rewind()
        output.get(out)
        return out
    }

    /** One inference on prepared input tensor bytes (little-endian); returns the raw output bytes. */
    fun runBytes(bytes: ByteArray): ByteArray {
        loadBytes(bytes)
        invoke()
        val out = ByteArray(output.capacity())
        output.rewind()
        output.get(out)
        return out
    }

    /** Copy [tensor] into the input buffer (once, for benchmark loops). */
    fun load(tensor: InputTensor) = loadBytes(tensor.toBytes())  // little-endian, as every Android ABI is

    private fun loadBytes(bytes: ByteArray) {
        require(bytes.size == input.capacity()) { "input tensor has ${input.capacity()} bytes, got ${bytes.size}" }
        input.rewind()
        input.put(bytes)
    }

    /** Run the interpreter on the current input buffer (what benchmark mode times). */
    fun invoke() {
        input.rewind()
        output.rewind()
        interpreter.run(input, output)
    }

    override fun close() {
        interpreter.close()
        gpu?.close()
    }

    companion object {
        fun mapFile(file: File): MappedByteBuffer = FileInputStream(file).use { s ->
            s.channel.map(FileChannel.MapMode.READ_ONLY, 0, s.channel.size())
        }

        /** Load [file]: validate metadata and preprocessing first, then build the interpreter. */
        fun open(file: File, backend: Backend, threads: Int): LiteRtClassifier {
            if (!file.canRead()) throw IllegalStateException("${file.path}: cannot read the model file")
            val t0 = SystemClock.elapsedRealtimeNanos()
            val buffer = mapFile(file)
            val model = EdgeModel.open(TfliteFile.read(buffer, file.name))
            val options = Interpreter.Options()
            options.setNumThreads(threads)
            options.setUseXNNPACK(true)
            var gpu: GpuDelegate? = null
            if (backend == Backend.GPU) {
                val compat = CompatibilityList()
                if (!compat.isDelegateSupportedOnThisDevice) {
                    throw IllegalStateException("GPU delegate: this device is not on LiteRT's GPU compatibility list; use the CPU")
                }
                gpu = GpuDelegate(compat.bestOptionsForThisDevice)
                options.addDelegate(gpu)
            }
            val interpreter = try {
                Interpreter(buffer, options)
            } catch (e: Exception) {
                gpu?.close()
                throw IllegalStateException("${file.name}: LiteRT cannot load this model (${e.message?.lineSequence()?.firstOrNull()})")
            }
            val loadMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
            return LiteRtClassifier(file, model, backend, threads, interpreter, gpu, loadMs)
        }
    }
}
