package org.edgeretina.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class PostprocessTest {
    private fun config(kind: String, labels: List<String>, extra: String = ""): ModelConfig = ModelConfig.fromJson(
        """{"schema": "edgeretina.run/1", "task": "t", "kind": "$kind", "labels": ${Json.write(labels)},
           "preprocessing": {"steps": [{"name": "resize", "params": {"size": 8}}, {"name": "scale", "params": {"mode": "tf"}}]}
           $extra}"""
    )

    private val int8Out = TensorInfo("out", TensorType.INT8, intArrayOf(1, 2), 1f / 256, -128)

    @Test
    fun binaryDecisionAtRecommendedThreshold() {
        val cfg = config("binary", listOf("normal", "glaucoma"), ""","positive_index": 1, "threshold": 0.3""")
        val p = Postprocessor(cfg, TensorInfo("o", TensorType.FLOAT32, intArrayOf(1, 2), 0f, 0))
        val low = p.fromFloats(floatArrayOf(0.75f, 0.25f))
        assertEquals("normal", low.decision)
        assertEquals(false, low.positive)
        assertEquals(0.25, low.score, 1e-7)
        val high = p.fromFloats(floatArrayOf(0.65f, 0.35f))
        assertEquals("glaucoma", high.decision)
        assertEquals("normal", high.topLabel)  // top class and thresholded decision differ on purpose
    }

    @Test
    fun int8OutputIsDequantised() {
        val cfg = config("binary", listOf("normal", "glaucoma"), ""","positive_index": 1, "threshold": 0.5""")
        val pred = Postprocessor(cfg, int8Out).fromBytes(byteArrayOf(64, -64))  // (64+128)/256, (-64+128)/256
        assertArrayEquals(doubleArrayOf(0.75, 0.25), pred.probabilities, 1e-9)
        assertEquals("normal", pred.decision)
    }

    @Test
    fun logitsGetTheRecordedActivation() {
        val cfg = config("multilabel", listOf("glaucoma", "dr"), ""","output": {"kind": "logits", "activation": "sigmoid"}, "threshold": [0.5, 0.9]""")
        val pred = Postprocessor(cfg, TensorInfo("o", TensorType.FLOAT32, intArrayOf(1, 2), 0f, 0)).fromFloats(floatArrayOf(0f, 2f))
        assertArrayEquals(doubleArrayOf(0.5, 1 / (1 + Math.exp(-2.0))), pred.probabilities, 1e-7)
        assertEquals("glaucoma", pred.decision)  // 0.5 >= 0.5; 0.88 < 0.9
        val soft = Postprocessor.activate(doubleArrayOf(1000.0, 1000.0, 998.0), "softmax")
        assertEquals(1.0, soft.sum(), 1e-12)
        assertEquals(soft[0], soft[1], 0.0)
    }

    @Test
    fun multiclassTakesTheTopGrade() {
        val cfg = config("multiclass", listOf("no DR", "mild", "moderate", "severe", "proliferative"))
        val pred = Postprocessor(cfg, TensorInfo("o", TensorType.FLOAT32, intArrayOf(1, 5), 0f, 0))
            .fromFloats(floatArrayOf(0.1f, 0.1f, 0.6f, 0.1f, 0.1f))
        assertEquals("moderate", pred.decision)
        assertEquals(null, pred.positive)
    }

    @Test
    fun drGradesAreDecidedByTheExpectedGrade() {
        // Python's tasks.predicted_classes (tests/test_metrics.py uses the same rows): DR grades are ordinal
        val json = """{"schema": "edgeretina.run/1", "task": "dr", "kind": "multiclass",
           "labels": ["no DR", "mild", "moderate", "severe", "proliferative"],
           "preprocessing": {"steps": [{"name": "resize", "params": {"size": 8}}, {"name": "scale", "params": {"mode": "tf"}}]}}"""
        val p = Postprocessor(ModelConfig.fromJson(json), TensorInfo("o", TensorType.FLOAT32, intArrayOf(1, 5), 0f, 0))
        val rows = listOf(floatArrayOf(0.51f, 0f, 0f, 0f, 0.49f) to "moderate", floatArrayOf(0.1f, 0.45f, 0.4f, 0.05f, 0f) to "mild",
            floatArrayOf(0f, 0.5f, 0.5f, 0f, 0f) to "moderate", floatArrayOf(0f, 0f, 0.2f, 0.3f, 0.5f) to "severe")
        for ((row, want) in rows) assertEquals(want, p.fromFloats(row).decision)
        assertEquals(1.96, Postprocessor.expectedGrade(doubleArrayOf(0.51, 0.0, 0.0, 0.0, 0.49)), 1e-12)
    }

    @Test
    fun quantiseMatchesNumpyRounding() {
        val t = TensorInfo("in", TensorType.INT8, intArrayOf(1, 1, 1, 4), 0.5f, -1)
        // numpy.round(x / scale + zp): -0.5 -> -0 (half to even), 2, clipped -128, 126.5 -> 126
        assertArrayEquals(intArrayOf(0, 2, -128, 126), Quant.quantize(floatArrayOf(0.25f, 1.5f, -1000f, 63.75f), t))
    }

    @Test
    fun configWithoutSchemaOrLabelsIsRefused() {
        for (bad in listOf("""{"task": "glaucoma"}""", """{"schema": "edgeretina.run/1", "task": "glaucoma"}""")) {
            try {
                ModelConfig.fromJson(bad, "m.tflite metadata")
                fail("accepted $bad")
            } catch (e: CoreException) {
                assertTrue(e.message!!, e.message!!.startsWith("m.tflite metadata: "))
            }
        }
    }
}
