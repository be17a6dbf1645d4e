package org.edgeretina.core.tools

import org.edgeretina.core.BenchmarkRequest
import org.edgeretina.core.BenchmarkResult
import org.edgeretina.core.CoreException
import org.edgeretina.core.DeviceInfo
import org.edgeretina.core.EdgeModel
import org.edgeretina.core.ImageOutputs
import org.edgeretina.core.NpyFloats
import org.edgeretina.core.Json
import org.edgeretina.core.ModelConfig
import org.edgeretina.core.Pipeline
import org.edgeretina.core.RgbImage
import org.edgeretina.core.TensorType
import org.edgeretina.core.TfliteFile
import java.io.File

/**
 * Command-line driver of the core module, used by the Python tests (tests/test_android_core.py) to run the
 * very code the app runs on real models and real fundus pixels. Not part of the app.
 *
 *   inspect MODEL.tflite                       -> JSON: tensors, metadata names, parsed config, pipeline status
 *   preprocess PIPELINE.json JOBS.json         -> for each job {rgb, width, height, out}: writes out.rgb (image
 *                                                 steps, uint8) and out.f32 (model input, float32 LE) + out.json
 *                                                 ({width, height, disc}: disc = the onh_crop/two_view detection)
 *   prepare MODEL.tflite IMAGE.rgb W H OUT     -> the input tensor bytes exactly as the app feeds LiteRT
 *   postprocess MODEL.tflite OUTPUT.bin        -> Prediction JSON from raw output tensor bytes
 *   locate PIPELINE.json JOBS.json             -> JSON list: the onh_crop detection per job (input pixels)
 *   lab IN OUT / lab2rgb IN OUT                -> OpenCV's 8-bit RGB <-> L*a*b* on interleaved bytes (Lab8)
 *   bench-fixture OUT.json                     -> a benchmark result written by the app's own serializer
 *   score MODEL INPUTS.npy OUTPUTS.bin FED.bin -> benchmark mode's per-image scoring (ImageOutputs JSON) with the
 *                                                 interpreter replaced by OUTPUTS.bin (one output tensor per
 *                                                 image, computed on the host); FED.bin = the tensors it fed
 *   guard MODEL FALLBACK OUT8.bin OUT16.bin    -> the int8-guard cascade (GuardedModel) per image: the int8
 *                                                 file's raw outputs, the fp16 fallback's read only for the
 *                                                 images it re-scores -> JSON {band, rescored, margins,
 *                                                 decisions, top, probabilities}
 * Errors: "error: <one line>" on stderr, exit 2.
 */
object CoreTool {
    @JvmStatic
    fun main(args: Array<String>) {
        try {
            run(args)
        } catch (e: CoreException) {
            System.err.println("error: " + e.message)
            System.exit(2)
        }
    }

    private fun run(args: Array<String>) {
        if (args.isEmpty()) throw CoreException("usage: CoreTool inspect|preprocess|prepare|postprocess|bench-fixture ...")
        when (args[0]) {
            "inspect" -> println(Json.write(inspect(File(args[1])), indent = 2))
            "preprocess" -> preprocess(File(args[1]), File(args[2]))
            "locate" -> locate(File(args[1]), File(args[2]))
            "lab" -> File(args[2]).writeBytes(org.edgeretina.core.Lab8.fromRgb(File(args[1]).readBytes()))
            "lab2rgb" -> File(args[2]).writeBytes(org.edgeretina.core.Lab8.toRgb(File(args[1]).readBytes()))
            "prepare" -> {
                val model = EdgeModel.open(TfliteFile.read(File(args[1])))
                val img = readRgb(File(args[2]), args[3].toInt(), args[4].toInt())
                File(args[5]).writeBytes(model.prepare(img).toBytes())
            }
            "postprocess" -> {
                val model = EdgeModel.open(TfliteFile.read(File(args[1])))
                println(Json.write(model.postprocessor.fromBytes(File(args[2]).readBytes()).toMap(), indent = 2))
            }
            "bench-fixture" -> File(args[1]).writeText(fixture().toJson())
            "score" -> score(File(args[1]), File(args[2]), File(args[3]), File(args[4]))
            "guard" -> guard(File(args[1]), File(args[2]), File(args[3]), File(args[4]))
            else -> throw CoreException("unknown command '${args[0]}'")
        }
    }

    private fun inspect(f: File): Map<String, Any?> {
        val tf = TfliteFile.read(f)
        val out = LinkedHashMap<String, Any?>()
        out["inputs"] = tf.inputs.map { it.toMap() }
        out["outputs"] = tf.outputs.map { it.toMap() }
        out["metadata_names"] = tf.metadataNames.toList()
        val text = tf.metadataText(ModelConfig.METADATA_NAME)
        out["metadata"] = if (text == null) null else Json.parse(text)
        try {
            val m = EdgeModel.open(tf)
            out["config"] = linkedMapOf(
                "task" to m.config.task, "kind" to m.config.kind, "labels" to m.config.labels,
                "positive_index" to m.config.positiveIndex, "threshold" to m.config.threshold,
                "output_kind" to m.config.outputKind, "activation" to m.config.activation,
                "input_size" to m.pipeline.inputSize, "scaling" to m.pipeline.scaling,
                "steps" to m.pipeline.imageSteps.map { it.name }
            )
            out["error"] = null
        } catch (e: CoreException) {
            out["config"] = null
            out["error"] = e.message
        }
        return out
    }

    private fun readRgb(f: File, w: Int, h: Int): RgbImage = RgbImage(w, h, f.readBytes())

    private fun preprocess(pipelineFile: File, jobsFile: File) {
        val pipe = Pipeline.fromJson(Json.parse(pipelineFile.readText(), pipelineFile.path), pipelineFile.path)
        @Suppress("UNCHECKED_CAST")
        val jobs = Json.parse(jobsFile.readText(), jobsFile.path) as List<Map<String, Any?>>
        for (job in jobs) {
            val img = readRgb(File(job["rgb"] as String), (job["width"] as Number).toInt(), (job["height"] as Number).toInt())
            val stepped = pipe.applyImage(img)
            val x = pipe.applyFloat(stepped)
            // an ONH pipeline also reports its detection (input pixels), from the with-info path the app shows
            val disc = if (pipe.usesOnh) {
                val (again, det) = pipe.applyImageWithInfo(img)
                if (!again.data.contentEquals(stepped.data)) throw CoreException("applyImageWithInfo != applyImage")
                det?.toMap()
            } else null
            val out = job["out"] as String
            File("$out.rgb").writeBytes(stepped.data)
            val bb = java.nio.ByteBuffer.allocate(x.size * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN)
            for (v in x) bb.putFloat(v)
            File("$out.f32").writeBytes(bb.array())
            File("$out.json").writeText(Json.write(linkedMapOf("width" to stepped.width, "height" to stepped.height,
                "disc" to disc)))
        }
    }

    /** The pipeline's optic-disc detection per job (input pixels), one JSON object per job in [jobsFile]'s order. */
    private fun locate(pipelineFile: File, jobsFile: File) {
        val pipe = Pipeline.fromJson(Json.parse(pipelineFile.readText(), pipelineFile.path), pipelineFile.path)
        @Suppress("UNCHECKED_CAST")
        val jobs = Json.parse(jobsFile.readText(), jobsFile.path) as List<Map<String, Any?>>
        val out = ArrayList<Any?>()
        for (job in jobs) {
            val img = readRgb(File(job["rgb"] as String), (job["width"] as Number).toInt(), (job["height"] as Number).toInt())
            val t0 = System.nanoTime()
            val det = pipe.detectDisc(img)
            val ms = (System.nanoTime() - t0) / 1e6
            out.add(det?.toMap()?.plus("ms" to ms))
        }
        println(Json.write(out))
    }

    private fun score(modelFile: File, npy: File, outputs: File, fed: File) {
        val model = EdgeModel.open(TfliteFile.read(modelFile))
        val outBytes = outputs.readBytes()
        val n = model.output.shape.fold(1) { a, b -> a * maxOf(b, 1) } * model.output.type.bytes
        var i = 0
        fed.outputStream().use { sink ->
            NpyFloats.open(npy).use { inputs ->
                val res = ImageOutputs.score(model, inputs) { tensor ->
                    sink.write(tensor)
                    val o = outBytes.copyOfRange(i * n, (i + 1) * n)
                    i++
                    o
                }
                println(Json.write(res.toMap(), indent = 2))
            }
        }
    }

    private fun guard(modelFile: File, fallbackFile: File, out8: File, out16: File) {
        val primary = EdgeModel.open(TfliteFile.read(modelFile))
        val g = org.edgeretina.core.GuardedModel.open(primary, fallbackFile.readBytes(), fallbackFile.path)
        fun size(m: EdgeModel) = m.output.shape.fold(1) { a, b -> a * maxOf(b, 1) } * m.output.type.bytes
        val n8 = size(g.primary)
        val n16 = size(g.fallback)
        val b8 = out8.readBytes()
        val b16 = out16.readBytes()
        val rows = (0 until b8.size / n8).map { i ->
            g.predict(b8.copyOfRange(i * n8, (i + 1) * n8)) { b16.copyOfRange(i * n16, (i + 1) * n16) }
        }
        println(Json.write(linkedMapOf("band" to g.info.band, "rescored" to rows.map { it.rescored },
            "margins" to rows.map { it.margin }, "decisions" to rows.map { it.prediction.decision },
            "top" to rows.map { it.prediction.topIndex },
            "probabilities" to rows.map { it.prediction.probabilities.toList() }), indent = 2))
    }

    /** A deterministic result through the real serializer: the JSON shape the app writes on a phone. */
    fun fixture(): BenchmarkResult {
        val req = BenchmarkRequest.of("/data/local/tmp/edgeretina/glaucoma_int8.tflite", 20, 5, 4, "cpu", "fixture-0001")
        val samples = DoubleArray(20) { 7.0 + ((it * 37) % 11) * 0.25 + (if (it == 13) 6.5 else 0.0) }
        val dev = DeviceInfo("Google", "Pixel 7", "panther", "Google Tensor G2", "14", 34, "arm64-v8a")
        val inp = org.edgeretina.core.TensorInfo("serving_default_input:0", TensorType.INT8, intArrayOf(1, 224, 224, 3), 0.0078125f, -1)
        val out = org.edgeretina.core.TensorInfo("StatefulPartitionedCall:0", TensorType.INT8, intArrayOf(1, 2), 0.00390625f, -128)
        // per-image outputs for three inputs sent by the host (an int8 output: raw values are integers)
        val cfg = ModelConfig.fromJson("""{"schema": "edgeretina.run/1", "task": "glaucoma", "kind": "binary",
            "labels": ["normal", "glaucoma"], "positive_index": 1, "threshold": 0.5, "borderline_band": 0.4,
            "preprocessing": {"steps": [{"name": "scale"}]}}""")
        val post = org.edgeretina.core.Postprocessor(cfg, out)
        val raw = listOf(byteArrayOf(-16, -112), byteArrayOf(-128, 127), byteArrayOf(-67, -3))
        val outputs = ImageOutputs("/data/local/tmp/edgeretina/0123456789ab-inputs.npy", "int8",
            raw.map { ImageOutputs.rawValues(it, TensorType.INT8) }, raw.map { post.fromBytes(it) })
        return BenchmarkResult(
            req, dev, samples, "xnnpack", inp, out, 2_712_345L,
            "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0", 41.5,
            "LiteRT 1.4.2 (Interpreter API)", "0.1.0", "2026-11-23T10:00:00Z", outputs = outputs
        )
    }
}
