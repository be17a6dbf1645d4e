package org.edgeretina.core

import kotlin.math.ceil
import kotlin.math.floor
import kotlin.math.max
import kotlin.math.min
import kotlin.math.sqrt

/** An RGB image, 8 bits per channel, row-major, interleaved: pixel (x, y) channel c at `(y*width + x)*3 + c`. */
class RgbImage(val width: Int, val height: Int, val data: ByteArray) {
    init {
        require(width > 0 && height > 0) { "image must not be empty" }
        require(data.size == width * height * 3) { "expected ${width * height * 3} bytes, got ${data.size}" }
    }

    fun get(x: Int, y: Int, c: Int): Int = data[(y * width + x) * 3 + c].toInt() and 0xff

    fun crop(x0: Int, y0: Int, x1: Int, y1: Int): RgbImage {
        val w = x1 - x0
        val h = y1 - y0
        val out = ByteArray(w * h * 3)
        for (y in 0 until h) System.arraycopy(data, ((y0 + y) * width + x0) * 3, out, y * w * 3, w * 3)
        return RgbImage(w, h, out)
    }

    companion object {
        /** From packed ARGB ints (Android `Bitmap.getPixels`, `java.awt.image.BufferedImage.getRGB`). */
        fun fromArgb(width: Int, height: Int, argb: IntArray): RgbImage {
            val out = ByteArray(width * height * 3)
            for (i in 0 until width * height) {
                val p = argb[i]
                out[3 * i] = (p shr 16).toByte()
                out[3 * i + 1] = (p shr 8).toByte()
                out[3 * i + 2] = p.toByte()
            }
            return RgbImage(width, height, out)
        }
    }
}

/** One preprocessing step on RGB uint8 images (image steps) or on the float tensor (float steps). */
interface ImageStep {
    val name: String
    fun apply(img: RgbImage): RgbImage
}

/**
 * The Python `edgeretina.preprocess.Pipeline`, re-implemented step by step so that a phone prepares a photo
 * exactly as training did (docs/data.md has each step's algorithm; the parity test compares the two on real
 * fundus photos). Implemented: fov_crop, onh_crop (the optic-disc locator, [DiscLocator]), two_view (whole
 * fundus | ONH crop side by side, [TwoView]), pad_square, resize (area | linear | nearest), grey, clahe and ben_graham ([Clahe], [BenGraham] in Enhance.kt), stretch,
 * standardize, scale (tf | torch | caffe | unit | none): every step edgeretina's recipes use. A model whose
 * pipeline uses anything else (cubic resize, or a step from a newer edgeretina) is refused with
 * [UnsupportedStepException] — never silently skipped.
 */
class Pipeline(val imageSteps: List<ImageStep>, val standardizeEps: Double?, val scaling: String) {

    /** The model input's height S (S for a `two_view` pipeline, whose input is S x 2S); null without a resize. */
    val inputSize: Int?
        get() = inputShape?.get(0)

    /** (height, width) the image steps end at: the last resize's, or (S, 2S) when `two_view` comes last. */
    val inputShape: IntArray?
        get() {
            for (s in imageSteps.reversed()) {
                if (s is Resize) return intArrayOf(s.height, s.width)
                if (s is TwoView) return intArrayOf(s.size, 2 * s.size)
            }
            return null
        }

    /** Run the uint8 image steps only. */
    fun applyImage(img: RgbImage): RgbImage {
        var x = img
        for (s in imageSteps) x = s.apply(x)
        return x
    }

    /** Run the float steps on an image-stepped image: the model's float32 input tensor, HWC order. */
    fun applyFloat(img: RgbImage): FloatArray {
        val n = img.width * img.height * 3
        val a = FloatArray(n)
        for (i in 0 until n) a[i] = (img.data[i].toInt() and 0xff).toFloat()
        if (standardizeEps != null) standardize(a, standardizeEps)
        scale(a, scaling)
        return a
    }

    /** RGB uint8 image -> float32 model input (H, W, 3) = [inputShape], row-major HWC. */
    fun apply(img: RgbImage): FloatArray = applyFloat(applyImage(img))

    val usesOnh: Boolean get() = imageSteps.any { it is OnhCrop || it is TwoView }

    /** The pipeline ends in the two-view input (whole fundus | ONH crop, S x 2S). */
    val twoView: Boolean get() = imageSteps.any { it is TwoView }

    /**
     * [applyImage] plus the `onh_crop` (or `two_view`) step's detection mapped back to the input image's pixels
     * (null without either). `detection.found == false`: the crop is a low-confidence guess — ask for a retake.
     */
    fun applyImageWithInfo(img: RgbImage, stopAtOnh: Boolean = false): Pair<RgbImage, DiscDetection?> {
        var x = img
        var sx = 1.0; var sy = 1.0; var ox = 0.0; var oy = 0.0
        var disc: DiscDetection? = null
        for (s in imageSteps) {
            val h = x.height
            val w = x.width
            when (s) {
                is OnhCrop -> {
                    val (crop, det) = s.cropWithInfo(x)
                    disc = det.scaled(sx, sy, ox, oy)
                    if (stopAtOnh) return Pair(crop, disc)
                    val side = crop.width
                    ox += sx * pyRound(det.x - side / 2.0)
                    oy += sy * pyRound(det.y - side / 2.0)
                    x = crop
                }
                is TwoView -> {
                    // the detection is made on this step's input; later steps need no coordinate mapping
                    val (out, det) = if (stopAtOnh) (if (s.subpixel) s.onh.cropSubpixel(x) else s.onh.cropWithInfo(x)) else s.applyWithInfo(x)
                    disc = det.scaled(sx, sy, ox, oy)
                    if (stopAtOnh) return Pair(out, disc)
                    x = out
                }
                is FovCrop -> {
                    val b = s.box(x)
                    ox += sx * b[2]; oy += sy * b[0]
                    x = s.apply(x)
                }
                is PadSquare -> {
                    if (h != w) {
                        val n = max(h, w)
                        ox -= sx * ((n - w) / 2); oy -= sy * ((n - h) / 2)
                    }
                    x = s.apply(x)
                }
                is Resize -> {
                    x = s.apply(x)
                    if (x.width != w || x.height != h) {
                        val fx = w.toDouble() / x.width
                        val fy = h.toDouble() / x.height
                        ox += sx * (0.5 * fx - 0.5); oy += sy * (0.5 * fy - 0.5)
                        sx *= fx; sy *= fy
                    }
                }
                else -> x = s.apply(x)
            }
        }
        return Pair(x, disc)
    }

    /** Only the steps up to `onh_crop` / `two_view`'s locator: its detection in input pixels (null when none). */
    fun detectDisc(img: RgbImage): DiscDetection? = if (usesOnh) applyImageWithInfo(img, stopAtOnh = true).second else null

    companion object {
        const val SCHEMA = "edgeretina.preprocess/1"
        val SUPPORTED = listOf("fov_crop", "onh_crop", "two_view", "pad_square", "resize", "grey", "clahe", "ben_graham", "stretch",
            "standardize", "scale")
        private val KNOWN_UNSUPPORTED = listOf<String>()
        val SCALINGS = listOf("tf", "torch", "caffe", "unit", "none")

        /** Parse `Pipeline.to_json()` (a dict with "steps", or the bare list of steps). */
        fun fromJson(obj: Any?, source: String = "preprocessing"): Pipeline {
            val steps: List<Any?> = when (obj) {
                is List<*> -> obj
                is Map<*, *> -> obj["steps"] as? List<Any?>
                    ?: throw CoreException("$source: preprocessing has no 'steps' list")
                else -> throw CoreException("$source: preprocessing must be an object with 'steps'")
            }
            val image = ArrayList<ImageStep>()
            var eps: Double? = null
            var scaling: String? = null
            var seenFloat = false
            for ((i, raw) in steps.withIndex()) {
                val m = raw as? Map<*, *> ?: throw CoreException("$source: step $i is not an object")
                val name = m["name"] as? String ?: throw CoreException("$source: step $i has no name")
                @Suppress("UNCHECKED_CAST")
                val params = JsonObj(
                    (m["params"] as? Map<String, Any?>) ?: (m as Map<String, Any?>).filterKeys { it != "name" },
                    "$source step '$name'"
                )
                if (name in KNOWN_UNSUPPORTED) {
                    throw UnsupportedStepException(
                        "$source: this app does not implement the preprocessing step '$name' " +
                            "(supported: ${SUPPORTED.joinToString(", ")}); export a model trained without it"
                    )
                }
                if (name !in SUPPORTED) {
                    throw UnsupportedStepException(
                        "$source: unknown preprocessing step '$name' (from a newer edgeretina?); " +
                            "supported: ${SUPPORTED.joinToString(", ")}"
                    )
                }
                if (seenFloat && name != "scale" && name != "standardize") {
                    throw CoreException("$source: image step '$name' cannot follow 'standardize'/'scale'")
                }
                when (name) {
                    "fov_crop" -> image.add(FovCrop(params.intOr("threshold", 10)!!,
                        params.doubleOr("min_fraction", 0.01)!!, params.intOr("margin", 0)!!))
                    "onh_crop" -> image.add(OnhCrop(DiscParams.fromJson(params)))
                    "two_view" -> {
                        val disc = DiscParams.fromJson(params, name, listOf("size", "interpolation", "onh_blur", "subpixel"))
                        val onhBlur = params.doubleOr("onh_blur", 0.0)!!
                        if (!(onhBlur >= 0.0 && onhBlur <= 5.0)) {
                            throw CoreException("$source: preprocessing step 'two_view': onh_blur $onhBlur must be a σ " +
                                "between 0 and 5 px")
                        }
                        val size = params.intOr("size", 128)!!
                        if (size < TwoView.MIN_SIZE || size > TwoView.MAX_SIZE) {
                            throw CoreException("$source: preprocessing step 'two_view': size $size must be an integer " +
                                "between ${TwoView.MIN_SIZE} and ${TwoView.MAX_SIZE} px (each view is size x size)")
                        }
                        val interp = params.stringOr("interpolation", "area")!!
                        if (interp !in Resize.MODES) {
                            throw UnsupportedStepException(
                                "$source: two_view interpolation '$interp' is not implemented by this app " +
                                    "(supported: ${Resize.MODES.joinToString(", ")})"
                            )
                        }
                        image.add(TwoView(size, interp, disc, onhBlur, params.boolOr("subpixel", false)))
                    }
                    "pad_square" -> image.add(PadSquare(params.intOr("value", 0)!!))
                    "resize" -> {
                        val size = params.map["size"] ?: 224L
                        val hw = when (size) {
                            is Number -> intArrayOf(size.toInt(), size.toInt())
                            is List<*> -> intArrayOf((size[0] as Number).toInt(), (size[1] as Number).toInt())
                            else -> throw CoreException("$source: resize 'size' must be an int or [h, w]")
                        }
                        val interp = params.stringOr("interpolation", "area")!!
                        if (interp !in Resize.MODES) {
                            throw UnsupportedStepException(
                                "$source: resize interpolation '$interp' is not implemented by this app " +
                                    "(supported: ${Resize.MODES.joinToString(", ")})"
                            )
                        }
                        image.add(Resize(hw[0], hw[1], interp))
                    }
                    "grey" -> image.add(Grey())
                    "clahe" -> image.add(Clahe(
                        knownParams(params, name, "clip_limit", "tile").doubleOr("clip_limit", 2.0)!!,
                        params.intOr("tile", 8)!!))
                    "ben_graham" -> image.add(BenGraham(
                        knownParams(params, name, "sigma_frac", "weight", "offset", "mask_radius").doubleOr("sigma_frac", 1.0 / 60)!!,
                        params.doubleOr("weight", 4.0)!!, params.doubleOr("offset", 128.0)!!,
                        params.doubleOr("mask_radius", 0.95)!!))
                    "stretch" -> image.add(Stretch(params.doubleOr("low", 0.2)!!, params.doubleOr("high", 99.8)!!,
                        params.boolOr("per_channel", false)))
                    "standardize" -> { seenFloat = true; eps = params.doubleOr("eps", 1e-6) }
                    "scale" -> {
                        seenFloat = true
                        val mode = params.stringOr("mode", "tf")!!
                        if (mode !in SCALINGS) {
                            throw UnsupportedStepException("$source: unknown scale mode '$mode' (supported: ${SCALINGS.joinToString(", ")})")
                        }
                        if (scaling != null) throw CoreException("$source: more than one 'scale' step")
                        scaling = mode
                    }
                }
            }
            val last = (steps.lastOrNull() as? Map<*, *>)?.get("name")
            if (scaling == null || last != "scale") {
                throw CoreException("$source: preprocessing must end with a 'scale' step")
            }
            return Pipeline(image, eps, scaling)
        }

        /** [params] itself, after refusing a parameter this app does not know (from a newer edgeretina). */
        private fun knownParams(params: JsonObj, step: String, vararg known: String): JsonObj {
            val unknown = params.map.keys.filter { it !in known }.sorted()
            if (unknown.isNotEmpty()) {
                throw UnsupportedStepException("${params.where}: unknown $step parameter(s) ${unknown.joinToString(", ")} " +
                    "(this app knows ${known.joinToString(", ")}; supported: ${SUPPORTED.joinToString(", ")})")
            }
            return params
        }

        /** Per-image standardisation (x - mean) / max(std, eps) over all pixels and channels. */
        fun standardize(a: FloatArray, eps: Double) {
            var sum = 0.0
            for (v in a) sum += v
            val mean = sum / a.size
            var ss = 0.0
            for (v in a) { val d = v - mean; ss += d * d }
            val std = max(sqrt(ss / a.size), eps)
            val m = mean.toFloat()
            val s = std.toFloat()
            for (i in a.indices) a[i] = (a[i] - m) / s
        }

        /** The backbone's input scaling, in float32 like numpy. Input and output are HWC, RGB. */
        fun scale(a: FloatArray, mode: String) {
            when (mode) {
                "tf" -> for (i in a.indices) a[i] = a[i] / 127.5f - 1.0f
                "unit" -> for (i in a.indices) a[i] = a[i] / 255.0f
                "torch" -> {
                    val mean = floatArrayOf(0.485f, 0.456f, 0.406f)
                    val std = floatArrayOf(0.229f, 0.224f, 0.225f)
                    for (i in a.indices) a[i] = (a[i] / 255.0f - mean[i % 3]) / std[i % 3]
                }
                "caffe" -> {
                    val bgrMean = floatArrayOf(103.939f, 116.779f, 123.68f)
                    var i = 0
                    while (i < a.size) {
                        val r = a[i]
                        val b = a[i + 2]
                        a[i] = b - bgrMean[0]
                        a[i + 1] = a[i + 1] - bgrMean[1]
                        a[i + 2] = r - bgrMean[2]
                        i += 3
                    }
                }
                "none" -> Unit
                else -> throw UnsupportedStepException("unknown scale mode '$mode'")
            }
        }
    }
}

/** Crop to the bounding box of the field of view: rows/columns with more than min_fraction FOV pixels. */
class FovCrop(val threshold: Int, val minFraction: Double, val margin: Int) : ImageStep {
    override val name = "fov_crop"

    override fun apply(img: RgbImage): RgbImage {
        val b = box(img)
        if (b[0] == 0 && b[2] == 0 && b[1] == img.height && b[3] == img.width) return img
        return img.crop(b[2], b[0], b[3], b[1])
    }

    /** The window [y0, y1, x0, x1] that [apply] cuts out (the whole image for a nearly black one). */
    fun box(img: RgbImage): IntArray {
        val w = img.width
        val h = img.height
        val rowCount = IntArray(h)
        val colCount = IntArray(w)
        val d = img.data
        for (y in 0 until h) {
            var o = y * w * 3
            for (x in 0 until w) {
                val m = max(d[o].toInt() and 0xff, max(d[o + 1].toInt() and 0xff, d[o + 2].toInt() and 0xff))
                if (m > threshold) { rowCount[y]++; colCount[x]++ }
                o += 3
            }
        }
        var y0 = -1
        var y1 = -1
        var x0 = -1
        var x1 = -1
        for (y in 0 until h) if (rowCount[y] > minFraction * w) { if (y0 < 0) y0 = y; y1 = y + 1 }
        for (x in 0 until w) if (colCount[x] > minFraction * h) { if (x0 < 0) x0 = x; x1 = x + 1 }
        if (y0 < 0 || x0 < 0) { y0 = 0; y1 = h; x0 = 0; x1 = w }
        y0 = max(0, y0 - margin)
        x0 = max(0, x0 - margin)
        y1 = min(h, y1 + margin)
        x1 = min(w, x1 + margin)
        if ((y1 - y0) < 0.1 * h || (x1 - x0) < 0.1 * w) return intArrayOf(0, h, 0, w)
        return intArrayOf(y0, y1, x0, x1)
    }
}

/**
 * The `two_view` step (Python `two_view_with_info`): an S x 2S image, the whole input padded square and
 * resized to S x S on the left, the `onh_crop` window (same locator parameters, [params]) padded square and
 * resized to S x S on the right. A two-view model reads it as one (1, S, 2S, 3) input. [onhBlur] σ > 0 (issue 18):
 * the resized ONH view is Gaussian-blurred like cv2.GaussianBlur(view, (0, 0), σ) (OpenCV's 8-bit fixed-point
 * path, [BenGraham.gaussianBlur]); [subpixel]: the window at the sub-pixel disc centre ([OnhCrop.cropSubpixel]).
 */
class TwoView(
    val size: Int, val interpolation: String, val params: DiscParams, val onhBlur: Double = 0.0,
    val subpixel: Boolean = false
) : ImageStep {
    override val name = "two_view"
    val onh = OnhCrop(params)
    private val pad = PadSquare(0)
    private val resize = Resize(size, size, interpolation)

    override fun apply(img: RgbImage): RgbImage = applyWithInfo(img).first

    /** The two views and the optic-disc detection (in [img]'s pixels) the right one is cropped around. */
    fun applyWithInfo(img: RgbImage): Pair<RgbImage, DiscDetection> {
        val (crop, det) = if (subpixel) onh.cropSubpixel(img) else onh.cropWithInfo(img)
        val full = resize.apply(pad.apply(img))
        val view = resize.apply(pad.apply(crop))
        val disc = if (onhBlur > 0.0) RgbImage(size, size, BenGraham.gaussianBlur(view, onhBlur)) else view
        val out = ByteArray(size * 2 * size * 3)
        val row = size * 3
        for (y in 0 until size) {
            System.arraycopy(full.data, y * row, out, y * 2 * row, row)
            System.arraycopy(disc.data, y * row, out, y * 2 * row + row, row)
        }
        return Pair(RgbImage(2 * size, size, out), det)
    }

    companion object {
        const val MIN_SIZE = 32
        const val MAX_SIZE = 512
    }
}

/** Pad the shorter side symmetrically (extra pixel bottom/right) to a square filled with [value]. */
class PadSquare(val value: Int) : ImageStep {
    override val name = "pad_square"

    override fun apply(img: RgbImage): RgbImage {
        val h = img.height
        val w = img.width
        if (h == w) return img
        val s = max(h, w)
        val top = (s - h) / 2
        val left = (s - w) / 2
        val out = ByteArray(s * s * 3)
        if (value != 0) java.util.Arrays.fill(out, value.toByte())
        for (y in 0 until h) System.arraycopy(img.data, y * w * 3, out, ((top + y) * s + left) * 3, w * 3)
        return RgbImage(s, s, out)
    }
}

/** Greyscale like cv2.COLOR_RGB2GRAY: 0.299 R + 0.587 G + 0.114 B in OpenCV's 15-bit fixed point (bit-exact), 3 channels. */
class Grey : ImageStep {
    override val name = "grey"

    override fun apply(img: RgbImage): RgbImage {
        val n = img.width * img.height
        val out = ByteArray(n * 3)
        val d = img.data
        for (i in 0 until n) {
            val r = d[3 * i].toInt() and 0xff
            val g = d[3 * i + 1].toInt() and 0xff
            val b = d[3 * i + 2].toInt() and 0xff
            val y = ((r * 9798 + g * 19235 + b * 3735 + (1 shl 14)) shr 15).toByte()
            out[3 * i] = y
            out[3 * i + 1] = y
            out[3 * i + 2] = y
        }
        return RgbImage(img.width, img.height, out)
    }
}

/** Percentile contrast stretch (numpy 'linear' percentiles, float64 like numpy): low..high percentile -> 0..255, rint. */
class Stretch(val low: Double, val high: Double, val perChannel: Boolean) : ImageStep {
    override val name = "stretch"

    override fun apply(img: RgbImage): RgbImage {
        val n = img.width * img.height
        val d = img.data
        val lo = DoubleArray(3)
        val hi = DoubleArray(3)
        if (perChannel) {
            for (c in 0 until 3) {
                val hist = LongArray(256)
                for (i in 0 until n) hist[d[3 * i + c].toInt() and 0xff]++
                lo[c] = percentile(hist, n.toLong(), low)
                hi[c] = percentile(hist, n.toLong(), high)
            }
        } else {
            val hist = LongArray(256)
            for (b in d) hist[b.toInt() and 0xff]++
            val l = percentile(hist, d.size.toLong(), low)
            val h = percentile(hist, d.size.toLong(), high)
            for (c in 0 until 3) { lo[c] = l; hi[c] = h }
        }
        // numpy's dtypes, reproduced: np.percentile over all values returns float64, so the global stretch
        // is computed in float64; with axis=(0, 1) (per channel) it returns float32, and so is the stretch.
        val out = ByteArray(d.size)
        for (c in 0 until 3) {
            var i = c
            if (perChannel) {
                val l = lo[c].toFloat()
                val k = 255.0f / max(hi[c].toFloat() - l, 1.0f)
                while (i < d.size) {
                    val v = Math.rint((((d[i].toInt() and 0xff).toFloat() - l) * k).toDouble())
                    out[i] = min(255.0, max(0.0, v)).toInt().toByte()
                    i += 3
                }
            } else {
                val k = 255.0 / max(hi[c].toFloat().toDouble() - lo[c], 1.0)
                while (i < d.size) {
                    val v = Math.rint(((d[i].toInt() and 0xff) - lo[c]) * k)
                    out[i] = min(255.0, max(0.0, v)).toInt().toByte()
                    i += 3
                }
            }
        }
        return RgbImage(img.width, img.height, out)
    }

    companion object {
        /** numpy.percentile(method="linear") of values given as a 256-bin histogram of [count] values (float64). */
        fun percentile(hist: LongArray, count: Long, q: Double): Double {
            val pos = q / 100.0 * (count - 1)
            val i = floor(pos).toLong()
            val t = pos - i
            val a = valueAt(hist, i).toDouble()
            val b = valueAt(hist, min(i + 1, count - 1)).toDouble()
            val diff = b - a
            return if (t >= 0.5) b - diff * (1 - t) else a + diff * t
        }

        private fun valueAt(hist: LongArray, index: Long): Int {
            var seen = 0L
            for (v in 0 until 256) {
                seen += hist[v]
                if (index < seen) return v
            }
            return 255
        }
    }
}

/**
 * Resize like `cv2.resize` on uint8 RGB: `area` = INTER_AREA when neither side grows (pixel-area weights,
 * exactly OpenCV's table), otherwise INTER_LINEAR; `linear` = INTER_LINEAR (half-pixel centres, 11-bit
 * fixed-point weights, OpenCV's vertical rounding); `nearest` = INTER_NEAREST. Bit-exact with OpenCV 5 on
 * x86 for area and linear (tests/test_android_core.py checks it on real fundus photos).
 */
class Resize(val height: Int, val width: Int, val interpolation: String) : ImageStep {
    override val name = "resize"

    override fun apply(img: RgbImage): RgbImage {
        if (img.height == height && img.width == width) return img
        var mode = interpolation
        if (mode == "area" && (height > img.height || width > img.width)) mode = "linear"
        return when (mode) {
            "area" -> area(img)
            "linear" -> linear(img)
            "nearest" -> nearest(img)
            else -> throw UnsupportedStepException("resize interpolation '$mode' is not implemented")
        }
    }

    private fun nearest(img: RgbImage): RgbImage {
        val out = ByteArray(width * height * 3)
        val sx = 1.0 / (width.toDouble() / img.width)
        val sy = 1.0 / (height.toDouble() / img.height)
        val xofs = IntArray(width) { min(floor(it * sx).toInt(), img.width - 1) }
        for (y in 0 until height) {
            val syi = min(floor(y * sy).toInt(), img.height - 1)
            for (x in 0 until width) {
                val s = (syi * img.width + xofs[x]) * 3
                val o = (y * width + x) * 3
                out[o] = img.data[s]; out[o + 1] = img.data[s + 1]; out[o + 2] = img.data[s + 2]
            }
        }
        return RgbImage(width, height, out)
    }

    private fun linear(img: RgbImage): RgbImage {
        val sw = img.width
        val sh = img.height
        val scaleX = 1.0 / (width.toDouble() / sw)
        val scaleY = 1.0 / (height.toDouble() / sh)
        val xs = IntArray(width)
        val ax = IntArray(width * 2)
        for (dx in 0 until width) {
            var fx = ((dx + 0.5) * scaleX - 0.5).toFloat()
            var sx = floor(fx.toDouble()).toInt()
            fx -= sx
            if (sx < 0) { fx = 0f; sx = 0 }
            if (sx >= sw - 1) { fx = 0f; sx = sw - 1 }
            xs[dx] = sx
            ax[2 * dx] = rint16((1f - fx) * COEF_SCALE)
            ax[2 * dx + 1] = rint16(fx * COEF_SCALE)
        }
        val out = ByteArray(width * height * 3)
        val row0 = IntArray(width * 3)
        val row1 = IntArray(width * 3)
        for (dy in 0 until height) {
            // rows: OpenCV keeps the unclamped weight and clamps the row indices instead
            var fy = ((dy + 0.5) * scaleY - 0.5).toFloat()
            val sy = floor(fy.toDouble()).toInt()
            fy -= sy
            val b0 = rint16((1f - fy) * COEF_SCALE)
            val b1 = rint16(fy * COEF_SCALE)
            hrow(img, min(max(sy, 0), sh - 1), xs, ax, row0)
            hrow(img, min(max(sy + 1, 0), sh - 1), xs, ax, row1)
            val o = dy * width * 3
            for (k in 0 until width * 3) {
                // OpenCV's SIMD vertical pass: ((S0>>4)*b0 >> 16) + ((S1>>4)*b1 >> 16), then (+2) >> 2
                val v = ((((row0[k] shr 4) * b0) shr 16) + (((row1[k] shr 4) * b1) shr 16) + 2) shr 2
                out[o + k] = min(255, max(0, v)).toByte()
            }
        }
        return RgbImage(width, height, out)
    }

    private fun hrow(img: RgbImage, sy: Int, xs: IntArray, ax: IntArray, row: IntArray) {
        val sw = img.width
        val base = sy * sw * 3
        for (dx in 0 until width) {
            val sx = xs[dx]
            val sx1 = min(sx + 1, sw - 1)
            for (c in 0 until 3) {
                val p0 = img.data[base + sx * 3 + c].toInt() and 0xff
                val p1 = img.data[base + sx1 * 3 + c].toInt() and 0xff
                row[dx * 3 + c] = p0 * ax[2 * dx] + p1 * ax[2 * dx + 1]
            }
        }
    }

    /** saturate_cast<short>(float): round half to even. */
    private fun rint16(v: Float): Int = Math.rint(v.toDouble()).toInt()

    private class Tab(val di: IntArray, val si: IntArray, val alpha: FloatArray)

    private fun areaTab(ssize: Int, dsize: Int, scale: Double): Tab {
        val di = ArrayList<Int>()
        val si = ArrayList<Int>()
        val al = ArrayList<Float>()
        for (dx in 0 until dsize) {
            val fsx1 = dx * scale
            val fsx2 = fsx1 + scale
            val cellWidth = min(scale, ssize - fsx1)
            var sx1 = ceil(fsx1).toInt()
            var sx2 = floor(fsx2).toInt()
            sx2 = min(sx2, ssize - 1)
            sx1 = min(sx1, sx2)
            if (sx1 - fsx1 > 1e-3) { di.add(dx); si.add(sx1 - 1); al.add(((sx1 - fsx1) / cellWidth).toFloat()) }
            for (sx in sx1 until sx2) { di.add(dx); si.add(sx); al.add((1.0 / cellWidth).toFloat()) }
            if (fsx2 - sx2 > 1e-3) {
                di.add(dx); si.add(sx2); al.add((min(min(fsx2 - sx2, 1.0), cellWidth) / cellWidth).toFloat())
            }
        }
        return Tab(di.toIntArray(), si.toIntArray(), al.toFloatArray())
    }

    private fun area(img: RgbImage): RgbImage {
        val sw = img.width
        val sh = img.height
        val scaleX = 1.0 / (width.toDouble() / sw)
        val scaleY = 1.0 / (height.toDouble() / sh)
        val ix = Math.round(scaleX).toInt()
        val iy = Math.round(scaleY).toInt()
        if (Math.abs(scaleX - ix) < EPS && Math.abs(scaleY - iy) < EPS) return areaFast(img, ix, iy)
        val xt = areaTab(sw, width, scaleX)
        val yt = areaTab(sh, height, scaleY)
        val out = ByteArray(width * height * 3)
        val buf = FloatArray(width * 3)
        val sum = FloatArray(width * 3)
        var k = 0
        for (dy in 0 until height) {
            java.util.Arrays.fill(sum, 0f)
            while (k < yt.di.size && yt.di[k] == dy) {
                val sy = yt.si[k]
                val beta = yt.alpha[k]
                java.util.Arrays.fill(buf, 0f)
                val base = sy * sw * 3
                for (j in xt.di.indices) {
                    val d = xt.di[j] * 3
                    val s = base + xt.si[j] * 3
                    val a = xt.alpha[j]
                    buf[d] += (img.data[s].toInt() and 0xff) * a
                    buf[d + 1] += (img.data[s + 1].toInt() and 0xff) * a
                    buf[d + 2] += (img.data[s + 2].toInt() and 0xff) * a
                }
                for (j in 0 until width * 3) sum[j] += beta * buf[j]
                k++
            }
            val o = dy * width * 3
            for (j in 0 until width * 3) {
                val v = Math.rint(sum[j].toDouble())
                out[o + j] = min(255.0, max(0.0, v)).toInt().toByte()
            }
        }
        return RgbImage(width, height, out)
    }

    private fun areaFast(img: RgbImage, ix: Int, iy: Int): RgbImage {
        val inv = 1.0f / (ix * iy)
        val out = ByteArray(width * height * 3)
        for (dy in 0 until height) {
            for (dx in 0 until width) {
                for (c in 0 until 3) {
                    var s = 0
                    for (yy in 0 until iy) {
                        val base = ((dy * iy + yy) * img.width + dx * ix) * 3 + c
                        for (xx in 0 until ix) s += img.data[base + xx * 3].toInt() and 0xff
                    }
                    // OpenCV: the 2x2 SIMD path rounds half up; the others are float sum*(1/area) rounded half-even
                    val v = if (ix == 2 && iy == 2) (s + 2) shr 2 else Math.rint((s * inv).toDouble()).toInt()
                    out[(dy * width + dx) * 3 + c] = v.toByte()
                }
            }
        }
        return RgbImage(width, height, out)
    }

    companion object {
        val MODES = listOf("area", "linear", "nearest")
        private const val COEF_SCALE = 2048f
        private const val EPS = 2.220446049250313e-16
    }
}
