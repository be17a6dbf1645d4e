package org.edgeretina.core

/**
 * The run config an edgeretina `.tflite` carries as JSON metadata (name "edgeretina", schema
 * `edgeretina.run/1`): task, labels, positive class, preprocessing, decision threshold and what the model
 * outputs. A model without it is refused ([CoreException]) — the app never guesses labels or preprocessing.
 */
class ModelConfig(
    val task: String,
    val kind: String,
    val labels: List<String>,
    val positiveIndex: Int?,
    val threshold: Double?,
    val thresholds: DoubleArray?,
    val outputKind: String,
    val activation: String,
    val arch: String?,
    val inputSize: Int?,
    val preprocessingJson: Any?,
    val raw: Map<String, Any?>,
    /** `borderline_band` (logit units) from the metadata, top level or under `extra`; null = none. */
    val borderlineBand: Double? = null
) {
    val isBinary: Boolean get() = kind == "binary"
    val isMultilabel: Boolean get() = kind == "multilabel"

    /** The preprocessing pipeline; throws [UnsupportedStepException] if it needs a step the app lacks. */
    fun pipeline(source: String = "model"): Pipeline = Pipeline.fromJson(preprocessingJson, "$source preprocessing")

    companion object {
        const val SCHEMA = "edgeretina.run/1"
        const val METADATA_NAME = "edgeretina"
        val KINDS = listOf("binary", "multiclass", "multilabel")

        fun fromJson(text: String, source: String = "config"): ModelConfig =
            fromMap(Json.parseObject(text, source), source)

        fun fromMap(map: Map<String, Any?>, source: String = "config"): ModelConfig {
            if (map["schema"] != SCHEMA) {
                throw CoreException("$source: not an edgeretina config (schema '$SCHEMA' missing)")
            }
            val o = JsonObj(map, source)
            val missing = listOf("task", "kind", "labels", "preprocessing").filter { !o.has(it) }
            if (missing.isNotEmpty()) throw CoreException("$source: config lacks ${missing.joinToString(", ")}")
            val kind = o.string("kind")
            if (kind !in KINDS) throw CoreException("$source: unknown task kind '$kind'")
            val labels = o.list("labels").map { it?.toString() ?: "" }
            if (labels.isEmpty()) throw CoreException("$source: config has no labels")
            val pos = o.intOr("positive_index", if (kind == "binary") labels.size - 1 else null)
            if (pos != null && (pos < 0 || pos >= labels.size)) {
                throw CoreException("$source: positive_index $pos is outside the ${labels.size} labels")
            }
            var threshold: Double? = null
            var thresholds: DoubleArray? = null
            val t = map["threshold"]
            when (t) {
                null -> Unit
                is Number -> threshold = t.toDouble()
                is List<*> -> thresholds = o.doubles("threshold")
                is Map<*, *> -> thresholds = DoubleArray(labels.size) { i ->
                    (t[labels[i]] as? Number)?.toDouble() ?: 0.5
                }
                else -> throw CoreException("$source: 'threshold' must be a number or a list")
            }
            if (thresholds != null && thresholds.size != labels.size) {
                throw CoreException("$source: ${thresholds.size} thresholds for ${labels.size} labels")
            }
            val out = o.objOrNull("output")
            val outputKind = out?.stringOr("kind", "probabilities") ?: "probabilities"
            val defaultAct = if (kind == "multilabel") "sigmoid" else "softmax"
            val activation = out?.stringOr("activation", defaultAct) ?: defaultAct
            if (outputKind != "probabilities" && outputKind != "logits") {
                throw CoreException("$source: unknown output kind '$outputKind' (probabilities or logits)")
            }
            if (activation !in listOf("softmax", "sigmoid", "none", "linear")) {
                throw CoreException("$source: unknown output activation '$activation'")
            }
            return ModelConfig(
                task = o.string("task"), kind = kind, labels = labels, positiveIndex = pos,
                threshold = threshold, thresholds = thresholds, outputKind = outputKind, activation = activation,
                arch = o.stringOr("arch", null), inputSize = o.intOr("input_size", null),
                preprocessingJson = map["preprocessing"], raw = map, borderlineBand = borderlineBand(map, source)
            )
        }

        const val BAND_KEY = "borderline_band"

        /** The metadata's borderline band, as `edgeretina predict` reads it (edgeretina/inference/predict.py). */
        fun borderlineBand(map: Map<String, Any?>, source: String): Double? {
            val v = map[BAND_KEY] ?: (map["extra"] as? Map<*, *>)?.get(BAND_KEY) ?: return null
            val band = (v as? Number)?.toDouble() ?: Double.NaN
            if (band.isNaN() || band.isInfinite() || band < 0) {
                throw CoreException("$source: metadata '$BAND_KEY' must be a non-negative number of logits, not $v")
            }
            return band
        }

        /** Read the "edgeretina" metadata entry of a model; a model without it is refused. */
        fun fromModel(model: TfliteFile): ModelConfig {
            val text = model.metadataText(METADATA_NAME)
                ?: throw CoreException(
                    "${model.source}: no '$METADATA_NAME' metadata (not exported by edgeretina; " +
                        "a model without its labels and preprocessing is refused)"
                )
            return fromJson(text, "${model.source} metadata")
        }
    }
}

/** An edgeretina model as the app sees it: interface tensors + config + preprocessing, all validated. */
class EdgeModel(val file: TfliteFile, val config: ModelConfig, val pipeline: Pipeline) {
    val input: TensorInfo get() = file.inputs[0]
    val output: TensorInfo get() = file.outputs[0]
    val postprocessor: Postprocessor get() = Postprocessor(config, output)

    /** RGB photo -> the exact bytes/floats the interpreter's input tensor wants. */
    fun prepare(img: RgbImage): InputTensor = InputTensor.from(pipeline.apply(img), input)

    companion object {
        /**
         * Open and validate: TFLite flatbuffer, edgeretina metadata, supported preprocessing, one input of
         * shape (1, H, W, 3) agreeing with the pipeline's output ((S, S) after a resize, (S, 2S) for a two-view
         * model), and an output with one value per label.
         */
        fun open(file: TfliteFile): EdgeModel {
            val cfg = ModelConfig.fromModel(file)
            val pipe = cfg.pipeline(file.source)
            if (file.inputs.size != 1) throw CoreException("${file.source}: expected 1 input tensor, found ${file.inputs.size}")
            if (file.outputs.isEmpty()) throw CoreException("${file.source}: model has no output tensor")
            val inp = file.inputs[0]
            val s = inp.shape
            if (s.size != 4 || s[3] != 3) {
                throw CoreException("${file.source}: input shape ${s.toList()} is not (1, H, W, 3)")
            }
            val hw = pipe.inputShape
                ?: throw CoreException("${file.source}: preprocessing has no resize (or two_view) step: the input size is unknown")
            if (s[1] != hw[0] || s[2] != hw[1]) {
                throw CoreException("${file.source}: preprocessing produces ${hw[0]}x${hw[1]} px images but the model " +
                    "input is ${s[1]}x${s[2]}")
            }
            if (inp.type != TensorType.FLOAT32 && !inp.isQuantized) {
                throw CoreException("${file.source}: unsupported input type ${inp.type.dtype}")
            }
            var n = 1
            for (d in file.outputs[0].shape) n *= maxOf(d, 1)
            if (n != cfg.labels.size) {
                throw CoreException("${file.source}: output has $n values but the config has ${cfg.labels.size} labels")
            }
            return EdgeModel(file, cfg, pipe)
        }
    }
}
