package org.edgeretina.core

import kotlin.math.exp

/** The model's input tensor contents: float32 values, or int8/uint8 values quantised with the tensor's params. */
class InputTensor(val type: TensorType, val floats: FloatArray?, val ints: IntArray?) {

    /** Little-endian bytes ready for a direct ByteBuffer (what LiteRT's Interpreter.run accepts). */
    fun toBytes(): ByteArray {
        if (floats != null) {
            val bb = java.nio.ByteBuffer.allocate(floats.size * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN)
            for (v in floats) bb.putFloat(v)
            return bb.array()
        }
        val q = ints!!
        return ByteArray(q.size) { q[it].toByte() }
    }

    companion object {
        fun from(x: FloatArray, tensor: TensorInfo): InputTensor = when {
            tensor.type == TensorType.FLOAT32 -> InputTensor(TensorType.FLOAT32, x, null)
            tensor.isQuantized -> InputTensor(tensor.type, null, Quant.quantize(x, tensor))
            else -> throw CoreException("input tensor '${tensor.name}': unsupported type ${tensor.type.dtype}")
        }
    }
}

/** Affine (de)quantisation of interface tensors: real = scale * (q - zero_point). */
object Quant {
    fun range(type: TensorType): IntArray = when (type) {
        TensorType.INT8 -> intArrayOf(-128, 127)
        TensorType.UINT8 -> intArrayOf(0, 255)
        TensorType.INT16 -> intArrayOf(-32768, 32767)
        else -> throw CoreException("not a quantised integer type: ${type.dtype}")
    }

    /** q = clip(rint(x / scale + zero_point)) in float32 arithmetic, as the Python runner computes it
     *  (numpy: float32 tensor / scale + zp, then round half to even). */
    fun quantize(x: FloatArray, t: TensorInfo): IntArray {
        val r = range(t.type)
        val s = t.scale
        val zp = t.zeroPoint.toFloat()
        return IntArray(x.size) {
            val q = Math.rint((x[it] / s + zp).toDouble())
            Math.max(r[0].toDouble(), Math.min(r[1].toDouble(), q)).toInt()
        }
    }

    fun dequantize(q: IntArray, t: TensorInfo): FloatArray =
        FloatArray(q.size) { ((q[it] - t.zeroPoint) * t.scale.toDouble()).toFloat() }

    /** Raw output bytes as the tensor's integers (int8 signed, uint8 unsigned). */
    fun ints(raw: ByteArray, type: TensorType): IntArray = when (type) {
        TensorType.INT8 -> IntArray(raw.size) { raw[it].toInt() }
        TensorType.UINT8 -> IntArray(raw.size) { raw[it].toInt() and 0xff }
        else -> throw CoreException("not an 8-bit type: ${type.dtype}")
    }
}

/** What the app shows for one photo. */
class Prediction(
    val labels: List<String>,
    val probabilities: DoubleArray,
    val topIndex: Int,
    /** BINARY: p(positive); otherwise the top probability. */
    val score: Double,
    val threshold: Double?,
    /** BINARY: the positive label when score >= threshold, else the other; MULTICLASS: the top label;
     *  MULTILABEL: the labels at or over their threshold, joined with ", " ("none" when empty). */
    val decision: String,
    val positive: Boolean?,
    /** True when the screening score lies within ±[borderlineBand] logits of its threshold (a benign retake
     *  could flip the decision: ask for one); null when the model has no band or no screening threshold. */
    val borderline: Boolean? = null,
    val borderlineBand: Double? = null
) {
    val topLabel: String get() = labels[topIndex]

    fun toMap(): Map<String, Any?> = linkedMapOf(
        "labels" to labels, "probabilities" to probabilities.toList(), "top" to topLabel, "score" to score,
        "threshold" to threshold, "decision" to decision, "positive" to positive, "borderline" to borderline,
        "borderline_band" to borderlineBand
    )

    fun withBorderline(near: Boolean?, band: Double?): Prediction =
        Prediction(labels, probabilities, topIndex, score, threshold, decision, positive, near, band)
}

/**
 * Output tensor -> probabilities (dequantise, activate logits) -> decision at the recommended threshold, and
 * the borderline flag of `edgeretina predict` (issue 18): the score within ±[band] logits of the threshold.
 * [band] defaults to the metadata's `borderline_band` (null: no flag).
 */
class Postprocessor(val config: ModelConfig, val output: TensorInfo, val band: Double? = config.borderlineBand) {

    fun fromBytes(raw: ByteArray): Prediction = when (output.type) {
        TensorType.FLOAT32 -> {
            val bb = java.nio.ByteBuffer.wrap(raw).order(java.nio.ByteOrder.LITTLE_ENDIAN)
            fromFloats(FloatArray(raw.size / 4) { bb.getFloat(4 * it) })
        }
        TensorType.INT8, TensorType.UINT8 -> fromFloats(Quant.dequantize(Quant.ints(raw, output.type), output))
        else -> throw CoreException("output tensor '${output.name}': unsupported type ${output.type.dtype}")
    }

    fun fromFloats(values: FloatArray): Prediction {
        val x = DoubleArray(values.size) { values[it].toDouble() }
        val p = if (config.outputKind == "logits") activate(x, config.activation) else x
        return decide(p)
    }

    fun decide(p: DoubleArray): Prediction {
        val pred = decideOnly(p)
        return pred.withBorderline(borderline(p), band)
    }

    /**
     * Python's `mark_borderline` on this model's probabilities: binary — |logit(p(positive)) − logit(t)| ≤ band;
     * multi-label — any label within the band of its own threshold (one shared threshold: the largest
     * abnormal-label probability against it); DR grading — p(referable) = p(grade ≥ 2) against the threshold;
     * other multi-class tasks (argmax, no threshold) — null.
     */
    fun borderline(p: DoubleArray): Boolean? {
        val b = band ?: return null
        return when (config.kind) {
            "binary" -> {
                val pos = config.positiveIndex ?: (p.size - 1)
                near(if (p.size > 1) p[pos] else p[0], config.threshold ?: 0.5, b)
            }
            "multilabel" -> {
                val ts = config.thresholds
                if (ts != null) p.indices.any { near(p[it], ts[it], b) }
                else {
                    val abnormal = p.indices.filter { config.labels[it].toLowerCase() !in NORMAL_LABELS }.map { p[it] }
                    near(if (abnormal.isEmpty()) p.max()!! else abnormal.max()!!, config.threshold ?: 0.5, b)
                }
            }
            else -> if (config.task == "dr") {
                var ref = 0.0
                for (i in REFERABLE_GRADE until p.size) ref += p[i]
                near(ref, config.threshold ?: 0.5, b)
            } else null
        }
    }

    private fun decideOnly(p: DoubleArray): Prediction {
        val labels = config.labels
        if (p.size != labels.size) throw CoreException("model output has ${p.size} values for ${labels.size} labels")
        var top = 0
        for (i in p.indices) if (p[i] > p[top]) top = i
        return when (config.kind) {
            "binary" -> {
                val pos = config.positiveIndex ?: (labels.size - 1)
                val score = p[pos]
                val t = config.threshold ?: 0.5
                val isPos = score >= t
                val neg = if (labels.size == 2) labels[1 - pos] else "not ${labels[pos]}"
                Prediction(labels, p, top, score, t, if (isPos) labels[pos] else neg, isPos)
            }
            "multilabel" -> {
                val ts = config.thresholds ?: DoubleArray(labels.size) { config.threshold ?: 0.5 }
                val on = labels.indices.filter { p[it] >= ts[it] }.map { labels[it] }
                Prediction(labels, p, top, p[top], config.threshold, if (on.isEmpty()) "none" else on.joinToString(", "),
                    on.isNotEmpty())
            }
            else -> {
                val k = if (config.task in ORDINAL_TASKS) expectedGradeClass(p) else top
                Prediction(labels, p, k, p[k], null, labels[k], null)
            }
        }
    }

    companion object {
        /** Labels that are not a finding (edgeretina/inference/predict.py `_NORMAL_LABELS`). */
        val NORMAL_LABELS = setOf("n", "normal", "healthy", "no dr", "non-referable")
        const val REFERABLE_GRADE = 2
        /** Tasks whose classes are ordered grades (Python `TaskSpec.ordinal`): decided by the expected grade. */
        val ORDINAL_TASKS = setOf("dr")

        /** Python's `tasks.expected_grade`: Σ k·p_k / Σ p_k. */
        fun expectedGrade(p: DoubleArray): Double {
            var num = 0.0
            var den = 0.0
            for (i in p.indices) { num += i * p[i]; den += p[i] }
            return num / Math.max(den, 1e-12)
        }

        /** Python's `tasks.predicted_classes` for an ordinal task: the expected grade rounded, half-way up. */
        fun expectedGradeClass(p: DoubleArray): Int =
            Math.min(Math.max(Math.floor(expectedGrade(p) + 0.5).toInt(), 0), p.size - 1)

        /** Python's `_logit`: p clipped to [1e-7, 1 − 1e-7], log(p) − log1p(−p). */
        fun logit(p: Double): Double {
            val q = Math.min(Math.max(p, 1e-7), 1 - 1e-7)
            return Math.log(q) - Math.log1p(-q)
        }

        fun near(score: Double, threshold: Double, band: Double): Boolean =
            Math.abs(logit(score) - logit(threshold)) <= band

        fun activate(x: DoubleArray, activation: String): DoubleArray = when (activation) {
            "sigmoid" -> DoubleArray(x.size) { 1.0 / (1.0 + exp(-x[it])) }
            "softmax" -> {
                var m = Double.NEGATIVE_INFINITY
                for (v in x) if (v > m) m = v
                val e = DoubleArray(x.size) { exp(x[it] - m) }
                var s = 0.0
                for (v in e) s += v
                DoubleArray(x.size) { e[it] / s }
            }
            "none", "linear" -> x.copyOf()
            else -> throw CoreException("unknown activation '$activation'")
        }
    }
}
