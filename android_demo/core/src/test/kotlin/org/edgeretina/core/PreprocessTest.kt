package org.edgeretina.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class PreprocessTest {
    /** A bright disc on black, like a fundus photo with its border. */
    private fun disc(w: Int, h: Int, cx: Int, cy: Int, r: Int): RgbImage {
        val d = ByteArray(w * h * 3)
        for (y in 0 until h) for (x in 0 until w) {
            if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) {
                val o = (y * w + x) * 3
                d[o] = (150 + x % 50).toByte(); d[o + 1] = (60 + y % 40).toByte(); d[o + 2] = 20
            }
        }
        return RgbImage(w, h, d)
    }

    private fun pipeline(vararg steps: String) = Pipeline.fromJson(Json.parse("""{"steps": [${steps.joinToString(",")}]}"""))

    @Test
    fun fovCropFindsTheDiscAndPadSquareCentresIt() {
        val img = disc(120, 80, 70, 40, 30)
        val cropped = FovCrop(10, 0.01, 0).apply(img)
        assertEquals(61, cropped.width)   // columns need > 0.01*80 FOV pixels: the 1-pixel extremes count
        assertEquals(59, cropped.height)  // rows need > 0.01*120 = 1.2: the 1-pixel top and bottom rows do not
        val padded = PadSquare(0).apply(img)
        assertEquals(120, padded.width)
        assertEquals(120, padded.height)
        assertEquals(img.get(70, 40, 0), padded.get(70, 40 + 20, 0))
    }

    @Test
    fun nearlyBlackImageIsKeptWhole() {
        val img = RgbImage(50, 50, ByteArray(50 * 50 * 3))
        assertTrue(FovCrop(10, 0.01, 0).apply(img) === img)
    }

    @Test
    fun areaResizeAveragesBlocks() {
        val d = ByteArray(4 * 2 * 3)
        for (i in 0 until 4 * 2) { d[3 * i] = (i * 10).toByte(); d[3 * i + 1] = 255.toByte(); d[3 * i + 2] = 1 }
        val out = Resize(1, 2, "area").apply(RgbImage(4, 2, d))
        // block 0: 0,10,40,50 -> 25 ; block 1: 20,30,60,70 -> 45
        assertEquals(25, out.get(0, 0, 0))
        assertEquals(45, out.get(1, 0, 0))
        assertEquals(255, out.get(1, 0, 1))
    }

    @Test
    fun scaleModesMatchTheBackboneConventions() {
        val a = floatArrayOf(0f, 127.5f, 255f)
        Pipeline.scale(a, "tf")
        assertEquals(-1f, a[0], 0f); assertEquals(0f, a[1], 0f); assertEquals(1f, a[2], 0f)
        val c = floatArrayOf(10f, 20f, 30f)  // RGB in, BGR minus means out
        Pipeline.scale(c, "caffe")
        assertEquals(30f - 103.939f, c[0], 1e-4f); assertEquals(10f - 123.68f, c[2], 1e-4f)
    }

    @Test
    fun pipelineRunsEndToEnd() {
        val p = pipeline("""{"name": "fov_crop"}""", """{"name": "pad_square"}""",
            """{"name": "resize", "params": {"size": 16, "interpolation": "area"}}""", """{"name": "scale", "params": {"mode": "unit"}}""")
        assertEquals(16, p.inputSize)
        val x = p.apply(disc(120, 80, 70, 40, 30))
        assertEquals(16 * 16 * 3, x.size)
        for (v in x) assertTrue(v in 0f..1f)
    }

    @Test
    fun twoViewPutsTheWholeFundusAndTheOnhCropSideBySide() {
        val p = pipeline("""{"name": "fov_crop"}""", """{"name": "two_view", "params": {"size": 32, "diameters": 1.5}}""",
            """{"name": "scale", "params": {"mode": "unit"}}""")
        assertEquals(32, p.inputSize)
        assertEquals(listOf(32, 64), p.inputShape!!.toList())
        assertTrue(p.usesOnh && p.twoView)
        val img = disc(120, 80, 70, 40, 30)
        val (out, det) = p.applyImageWithInfo(img)
        assertEquals(64, out.width)
        assertEquals(32, out.height)
        assertEquals(32 * 64 * 3, p.apply(img).size)
        // left half: the FOV crop padded square and resized, exactly the plain pipeline's image
        val left = pipeline("""{"name": "fov_crop"}""", """{"name": "pad_square"}""",
            """{"name": "resize", "params": {"size": 32}}""", """{"name": "scale"}""").applyImage(img)
        assertTrue(out.crop(0, 0, 32, 32).data.contentEquals(left.data))
        // right half: the ONH crop (same locator) padded square and resized; the detection in input pixels
        val only = p.detectDisc(img)!!
        assertEquals(det!!.x, only.x, 1e-9)
        assertEquals(det.y, only.y, 1e-9)
        val onh = pipeline("""{"name": "fov_crop"}""", """{"name": "onh_crop", "params": {"diameters": 1.5}}""",
            """{"name": "pad_square"}""", """{"name": "resize", "params": {"size": 32}}""", """{"name": "scale"}""")
        assertTrue(out.crop(32, 0, 64, 32).data.contentEquals(onh.applyImage(img).data))
        assertEquals(det.x, onh.detectDisc(img)!!.x, 1e-9)
        for (bad in listOf("""{"size": 16}""", """{"size": 1024}""")) {
            try {
                pipeline("""{"name": "two_view", "params": $bad}""", """{"name": "scale"}""")
                fail("accepted two_view $bad")
            } catch (e: CoreException) {
                assertTrue(e.message!!, e.message!!.contains("between 32 and 512"))
            }
        }
    }

    @Test
    fun unsupportedStepsAreRefusedNotSkipped() {
        for (step in listOf("""{"name": "ben_graham", "params": {"radius_v9": 1}}""",
                            """{"name": "clahe", "params": {"colour_space_v9": "hsv"}}""",
                            """{"name": "onh_crop", "params": {"disc_finder_v9": 1}}""",
                            """{"name": "two_view", "params": {"views_v9": 3}}""",
                            """{"name": "two_view", "params": {"interpolation": "cubic"}}""",
                            """{"name": "resize", "params": {"size": 8, "interpolation": "cubic"}}""", """{"name": "sharpen_v9"}""")) {
            try {
                pipeline(step, """{"name": "scale", "params": {"mode": "tf"}}""")
                fail("accepted $step")
            } catch (e: UnsupportedStepException) {
                assertTrue(e.message!!, e.message!!.contains("supported:"))
            }
        }
        try {
            pipeline("""{"name": "resize", "params": {"size": 8}}""")
            fail("accepted a pipeline without scale")
        } catch (e: CoreException) {
            assertTrue(e.message!!.contains("'scale'"))
        }
    }
}
