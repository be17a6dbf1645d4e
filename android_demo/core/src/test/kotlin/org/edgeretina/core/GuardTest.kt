package org.edgeretina.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** The int8-guard margin (GuardInfo.margin) by task kind and the export.guard metadata's refusals. */
class GuardTest {
    private fun config(task: String, kind: String, labels: List<String>, extra: String = ""): ModelConfig =
        ModelConfig.fromJson(
            """{"schema": "edgeretina.run/1", "task": "$task", "kind": "$kind", "labels": ${Json.write(labels)},
               "preprocessing": {"steps": [{"name": "resize", "params": {"size": 8}}, {"name": "scale"}]} $extra}"""
        )

    private fun softmax(z: DoubleArray): DoubleArray = Postprocessor.activate(z, "softmax")

    @Test
    fun argmaxMarginIsTheTopTwoLogitGap() {
        val cfg = config("classes", "multiclass", listOf("a", "b", "c"))
        assertEquals(0.1, GuardInfo.margin(cfg, softmax(doubleArrayOf(0.0, 2.0, 1.9))), 1e-9)
        assertEquals(3.0, GuardInfo.margin(cfg, softmax(doubleArrayOf(5.0, 2.0, -1.0))), 1e-9)
    }

    @Test
    fun drGradingAlsoGuardsTheReferralScore() {
        val cfg = config("dr", "multiclass", listOf("0", "1", "2", "3", "4"), ""","threshold": 0.5""")
        val p = softmax(doubleArrayOf(2.0, 0.0, 1.0, 0.5, 0.0))  // grade margin 1 (0 vs 2), p(grade >= 2) ≈ 0.39
        val ref = p[2] + p[3] + p[4]
        assertEquals(Math.abs(Postprocessor.logit(ref)), GuardInfo.margin(cfg, p), 1e-9)
        assertTrue(GuardInfo.margin(cfg, p) < 0.5)
        val other = config("classes", "multiclass", listOf("0", "1", "2", "3", "4"), ""","threshold": 0.5""")
        assertEquals(1.0, GuardInfo.margin(other, p), 1e-9)  // only DR grading has a referral score
    }

    @Test
    fun binaryAndMultilabelMarginsAreLogitDistances() {
        val bin = config("glaucoma", "binary", listOf("normal", "glaucoma"), ""","threshold": 0.5""")
        assertEquals(Postprocessor.logit(0.6), GuardInfo.margin(bin, doubleArrayOf(0.4, 0.6)), 1e-12)
        val ml = config("odir", "multilabel", listOf("N", "D"), ""","threshold": [0.5, 0.2]""")
        assertEquals(Math.abs(Postprocessor.logit(0.25) - Postprocessor.logit(0.2)),
            GuardInfo.margin(ml, doubleArrayOf(0.9, 0.25)), 1e-12)
    }

    @Test
    fun guardMetadataIsReadOrRefused() {
        val labels = listOf("normal", "glaucoma")
        assertNull(GuardInfo.of(config("glaucoma", "binary", labels)))
        val ok = GuardInfo.of(config("glaucoma", "binary", labels,
            ""","export": {"guard": {"fallback": "m_fp16.tflite", "fallback_sha256": "ab", "band": 0.6, "k": 3}}"""))!!
        assertEquals("m_fp16.tflite", ok.fallback)
        assertEquals(0.6, ok.band, 0.0)
        for (bad in listOf(""""band": -1, "fallback": "m.tflite"""", """"band": 0.5, "fallback": "../m.tflite"""",
                           """"fallback": "m.tflite"""")) {
            try {
                GuardInfo.of(config("glaucoma", "binary", labels, ""","export": {"guard": {$bad}}"""), "m.tflite")
                fail("accepted $bad")
            } catch (e: CoreException) {
                assertTrue(e.message!!, e.message!!.startsWith("m.tflite: int8-guard metadata"))
            }
        }
        try {
            ok.checkFallback(byteArrayOf(1, 2, 3), "m.tflite")
            fail("accepted another fallback")
        } catch (e: CoreException) {
            assertTrue(e.message!!.contains("sha256 differs"))
        }
    }
}
