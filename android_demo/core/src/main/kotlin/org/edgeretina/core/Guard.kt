package org.edgeretina.core

/**
 * int8-guard (edgeretina `converters/guard.py`): the int8 model answers; a photo whose decision lies within
 * [band] of changing is re-scored by the fp16 model of the same export, whose file name and sha256 the int8
 * file's metadata names (`export.guard`). The same rule as Python's `guard.margins`, by task kind:
 *
 * - binary: |logit(p(positive)) − logit(threshold)|;
 * - multi-label: the smallest over labels of |logit(p) − logit(that label's threshold)|;
 * - multi-class (argmax): log p₁ − log p₂ of the top two classes (probabilities clipped at 1e-30); DR grading
 *   also |logit(p(grade ≥ 2)) − logit(threshold)| (the referral score), whichever is smaller.
 *
 * A photo is re-scored when that margin is ≤ [band] (logits).
 */
class GuardInfo(val fallback: String, val fallbackSha256: String, val band: Double, val k: Double?) {

    /** The fallback's bytes are the file the export wrote (sha256 as in the metadata); else [CoreException]. */
    fun checkFallback(bytes: ByteArray, source: String) {
        val md = java.security.MessageDigest.getInstance("SHA-256").digest(bytes)
        val hex = md.joinToString("") { String.format("%02x", it.toInt() and 0xff) }
        if (fallbackSha256.isNotEmpty() && hex != fallbackSha256) {
            throw CoreException("$source: int8-guard fallback $fallback: sha256 differs from the model's metadata")
        }
    }

    companion object {
        const val KEY = "guard"
        private const val TINY = 1e-30

        /** `export.guard` of a model's metadata; null when it has none; [CoreException] when malformed. */
        fun of(config: ModelConfig, source: String = "model"): GuardInfo? {
            val g = (config.raw["export"] as? Map<*, *>)?.get(KEY) ?: return null
            val m = g as? Map<*, *> ?: throw CoreException("$source: malformed int8-guard metadata ($KEY)")
            val band = (m["band"] as? Number)?.toDouble() ?: Double.NaN
            val fb = m["fallback"] as? String ?: ""
            if (band.isNaN() || band.isInfinite() || band < 0 || fb.isEmpty() || fb.contains('/') || fb.contains('\\')) {
                throw CoreException("$source: int8-guard metadata needs a non-negative band and a fallback file name " +
                    "in the same folder, got band ${m["band"]}, fallback ${m["fallback"]}")
            }
            return GuardInfo(fb, m["fallback_sha256"] as? String ?: "", band, (m["k"] as? Number)?.toDouble())
        }

        /** The image's distance in logits from a changed decision (see the class comment). */
        fun margin(config: ModelConfig, p: DoubleArray): Double = when (config.kind) {
            "binary" -> {
                val pos = if (p.size == 2) (config.positiveIndex ?: 1) else p.size - 1
                dist(p[pos], config.threshold ?: 0.5)
            }
            "multilabel" -> {
                val ts = config.thresholds
                var m = Double.POSITIVE_INFINITY
                for (i in p.indices) m = Math.min(m, dist(p[i], ts?.get(i) ?: config.threshold ?: 0.5))
                m
            }
            else -> {
                var a = Double.NEGATIVE_INFINITY
                var b = Double.NEGATIVE_INFINITY
                for (v in p) {
                    val l = Math.log(Math.max(v, TINY))
                    if (l > a) { b = a; a = l } else if (l > b) b = l
                }
                var m = a - b
                if (config.task == "dr") {
                    var ref = 0.0
                    for (i in Postprocessor.REFERABLE_GRADE until p.size) ref += p[i]
                    m = Math.min(m, dist(ref, config.threshold ?: 0.5))
                }
                m
            }
        }

        private fun dist(score: Double, threshold: Double): Double =
            Math.abs(Postprocessor.logit(score) - Postprocessor.logit(threshold))
    }
}

/** One photo through the cascade: the prediction the app shows and whether the fp16 fallback made it. */
class GuardedPrediction(val prediction: Prediction, val rescored: Boolean, val margin: Double)

/**
 * The cascade of an int8-guard model: [primary] (the int8 model, carrying `export.guard`) and [fallback] (the
 * fp16 file it names). [fallbackBytes] are the fallback's file bytes, checked against the metadata's sha256.
 */
class GuardedModel(val primary: EdgeModel, val fallback: EdgeModel, val info: GuardInfo) {

    /** [primaryOut]: the int8 model's raw output tensor; [fallbackOut] runs the fp16 model on the same photo
     *  (called only for photos inside the band) and returns its raw output tensor. */
    fun predict(primaryOut: ByteArray, fallbackOut: () -> ByteArray): GuardedPrediction {
        val first = primary.postprocessor.fromBytes(primaryOut)
        val m = GuardInfo.margin(primary.config, first.probabilities)
        if (m > info.band) return GuardedPrediction(first, false, m)
        return GuardedPrediction(fallback.postprocessor.fromBytes(fallbackOut()), true, m)
    }

    companion object {
        fun open(primary: EdgeModel, fallbackBytes: ByteArray, fallbackSource: String): GuardedModel {
            val src = primary.file.source
            val info = GuardInfo.of(primary.config, src)
                ?: throw CoreException("$src: not an int8-guard model (no export.guard in its metadata)")
            info.checkFallback(fallbackBytes, src)
            val fb = EdgeModel.open(TfliteFile.read(fallbackBytes, fallbackSource))
            if (fb.config.labels != primary.config.labels || fb.config.kind != primary.config.kind) {
                throw CoreException("$src: int8-guard fallback $fallbackSource has other labels or task kind")
            }
            return GuardedModel(primary, fb, info)
        }
    }
}
