package org.edgeretina.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class EnhanceTest {
    @Test
    fun gaussianKernelIsOpenCvsFixedPointKernel() {
        // cv::GaussianBlur(8U, 7x7, sigma 2): OpenCV's Q8 kernel (error diffusion, sums to 256)
        assertArrayEquals(intArrayOf(18, 34, 48, 56, 48, 34, 18), BenGraham.fixedKernel(7, 2.0))
        for (sigma in listOf(0.5, 1.3, 3.7333, 5.0, 12.5)) {
            val n = Math.rint(sigma * 6.0 + 1.0).toInt() or 1
            val k = BenGraham.fixedKernel(n, sigma)
            assertEquals(256, k.sum())
            for (i in 0 until n / 2) assertEquals(k[i], k[n - 1 - i])
        }
    }

    @Test
    fun filledCircleIsSymmetricAndInsideItsRadius() {
        val m = BenGraham.circleMask(21, 21, 10, 10, 8)
        for (y in 0 until 21) for (x in 0 until 21) {
            assertEquals(m[y * 21 + x], m[x * 21 + y])
            assertEquals(m[y * 21 + x], m[y * 21 + (20 - x)])
            if (m[y * 21 + x]) assertTrue((x - 10) * (x - 10) + (y - 10) * (y - 10) <= 9 * 9)
        }
        assertTrue(m[10 * 21 + 2] && !m[10 * 21 + 1])
    }

    @Test
    fun labRoundTripOfGreysIsNearlyIdentity() {
        val rgb = ByteArray(256 * 3) { (it / 3).toByte() }
        val back = Lab8.toRgb(Lab8.fromRgb(rgb))
        for (i in rgb.indices) assertTrue(Math.abs((rgb[i].toInt() and 0xff) - (back[i].toInt() and 0xff)) <= 1)
        // black and white
        val lab = Lab8.fromRgb(byteArrayOf(0, 0, 0, -1, -1, -1))
        assertEquals(0, lab[0].toInt() and 0xff)
        assertEquals(255, lab[3].toInt() and 0xff)
    }

    @Test
    fun pipelineParsesBothSteps() {
        val p = Pipeline.fromJson(Json.parse("""{"steps": [{"name": "resize", "params": {"size": 64}},
            {"name": "clahe", "params": {"clip_limit": 2.0, "tile": 8}},
            {"name": "ben_graham", "params": {"sigma_frac": 0.0166, "weight": 4.0, "offset": 128.0, "mask_radius": 0.95}},
            {"name": "scale", "params": {"mode": "tf"}}]}"""))
        assertEquals(listOf("resize", "clahe", "ben_graham"), p.imageSteps.map { it.name })
        val img = RgbImage(64, 64, ByteArray(64 * 64 * 3) { (it % 251).toByte() })
        val out = p.applyImage(img)
        assertEquals(64, out.width)
        assertEquals(0, out.data[0].toInt())  // the corner is outside Ben Graham's circle
    }
}
