package org.edgeretina.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import kotlin.math.abs
import kotlin.math.hypot

class DiscLocatorTest {
    /** An orange fundus circle on black with bright round spots (discs) at [spots]. */
    private fun fundus(size: Int, spots: List<IntArray>): RgbImage {
        val d = ByteArray(size * size * 3)
        val c = size / 2
        val r = (size * 0.47).toInt()
        for (y in 0 until size) for (x in 0 until size) {
            if ((x - c) * (x - c) + (y - c) * (y - c) > r * r) continue
            val o = (y * size + x) * 3
            var rgb = intArrayOf(170, 80, 40)
            for (s in spots) if ((x - s[0]) * (x - s[0]) + (y - s[1]) * (y - s[1]) <= s[2] * s[2]) rgb = intArrayOf(240, 200, 150)
            d[o] = rgb[0].toByte(); d[o + 1] = rgb[1].toByte(); d[o + 2] = rgb[2].toByte()
        }
        return RgbImage(size, size, d)
    }

    @Test
    fun findsOneBrightRoundDisc() {
        val det = DiscLocator.locate(fundus(256, listOf(intArrayOf(180, 128, 16))))
        assertTrue(det.reason, det.found)
        assertTrue("$det", hypot(det.x - 180, det.y - 128) < 6)
        assertTrue(det.confidence >= 0.5)
    }

    @Test
    fun featurelessFundusFallsBackToTheCentreFlagged() {
        val det = DiscLocator.locate(fundus(200, listOf()))
        assertFalse(det.found)
        assertTrue(det.fallback)
        assertEquals("no disc-like spot", det.reason)
        assertTrue(abs(det.x - 99.5) < 3 && abs(det.y - 99.5) < 3)
        assertEquals(0.0, det.confidence, 0.0)
    }

    @Test
    fun twoEqualDiscsAreAmbiguous() {
        val det = DiscLocator.locate(fundus(256, listOf(intArrayOf(80, 128, 16), intArrayOf(176, 128, 16))))
        assertFalse(det.found)
        assertEquals("ambiguous", det.reason)
        assertTrue(det.confidence < 0.5)
    }

    @Test
    fun pipelineCropsAroundTheDiscAndReportsItInInputPixels() {
        val img = fundus(256, listOf(intArrayOf(180, 128, 16)))
        val p = Pipeline.fromJson(Json.parse("""{"steps": [{"name": "fov_crop"}, {"name": "onh_crop"},
            {"name": "pad_square"}, {"name": "resize", "params": {"size": 64}}, {"name": "scale"}]}"""))
        assertTrue(p.usesOnh)
        val (out, det) = p.applyImageWithInfo(img)
        assertEquals(64, out.width)
        assertTrue("$det", det != null && det.found && hypot(det.x - 180, det.y - 128) < 6)
        val only = p.detectDisc(img)!!
        assertEquals(det!!.x, only.x, 1e-9)
    }
}
