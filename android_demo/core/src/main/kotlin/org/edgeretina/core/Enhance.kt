package org.edgeretina.core

import kotlin.math.max
import kotlin.math.min

/*
 * The two contrast-enhancement steps of edgeretina's preprocessing, `clahe` and `ben_graham`, re-implemented
 * so that a phone produces the very bytes `edgeretina.preprocess` produces with OpenCV on x86:
 *
 *  - CLAHE on L*: OpenCV's 8-bit RGB -> L*a*b* and L*a*b* -> RGB (the integer, table-driven "bit-exact"
 *    paths, tables built with the same constants and formulas), and OpenCV's CLAHE (per-tile clipped
 *    histograms, REFLECT_101 extension to a multiple of the tile grid, bilinear interpolation in float).
 *  - Ben Graham: OpenCV's 8-bit GaussianBlur (the fixed-point path: Q8 kernel by error diffusion, Q16
 *    accumulation, round half up, REFLECT_101 borders), addWeighted in float, and cv2.circle's filled
 *    midpoint circle as the mask.
 *
 * tests/test_android_core.py compares both with Python on real fundus photos, and the Lab conversions with
 * OpenCV on all 16.7 million colours.
 */

/** Round half to even, like OpenCV's cvRound on float/double. */
private fun rintInt(v: Double): Int = Math.rint(v).toInt()

/** borderInterpolate(p, n, BORDER_REFLECT_101). */
internal fun reflect101(p0: Int, n: Int): Int {
    if (n == 1) return 0
    var p = p0
    while (p < 0 || p >= n) {
        p = if (p < 0) -p else 2 * (n - 1) - p
    }
    return p
}

/** OpenCV's 8-bit sRGB <-> CIE L*a*b* (D65) conversions (cv2.COLOR_RGB2LAB / COLOR_LAB2RGB on uint8). */
object Lab8 {
    private const val LAB_SHIFT = 12
    private const val GAMMA_SHIFT = 3
    private const val LAB_SHIFT2 = LAB_SHIFT + GAMMA_SHIFT
    private const val CBRT_TAB_SIZE = 256 * 3 / 2 * (1 shl GAMMA_SHIFT)
    private const val INV_GAMMA_SHIFT = 12
    private const val INV_GAMMA_TAB_SIZE = 1 shl INV_GAMMA_SHIFT
    private const val BASE = 1 shl 14
    private const val MIN_AB = -8145

    // sRGB -> XYZ and XYZ -> sRGB (D65), and the white point: OpenCV's exact double bit patterns
    private val RGB2XYZ = bits(
        "3fda65a14488c60d", "3fd6e297396d0918", "3fc71819d2391d58",
        "3fcb38cda6e75ff6", "3fe6e297396d0918", "3fb279aae6c8f755",
        "3f93cc4ac6cdaf4b", "3fbe836eb4e98138", "3fee68427418d691"
    )
    private val XYZ2RGB = bits(
        "4009ec804102ff8f", "bff8982a9930be0e", "bfdfe7ff583a53b9",
        "bfef042528ae74f3", "3ffe040f23897204", "3fa546d3f9e7b80b",
        "3fac7de5082cf52c", "bfca1e14bdfd2631", "3ff0eabef06b3786"
    )
    private val WHITE = doubleArrayOf(bits("3fee6a22b3892ee8")[0], 1.0, bits("3ff16b8950763a19")[0])

    private fun bits(vararg hex: String): DoubleArray =
        DoubleArray(hex.size) { java.lang.Double.longBitsToDouble(java.lang.Long.parseUnsignedLong(hex[it], 16)) }

    private val gammaTab = IntArray(256)
    private val invGammaTab = IntArray(INV_GAMMA_TAB_SIZE)
    private val cbrtTab = IntArray(CBRT_TAB_SIZE)
    private val labToYF = IntArray(512)
    private val abToXZ = IntArray(BASE * 9 / 4)
    private val fwd = IntArray(9)
    private val inv = IntArray(9)

    private fun applyGamma(x: Float): Float {
        val xd = x.toDouble()
        return (if (xd <= 809.0 / 20000.0) xd / (323.0 / 25.0)
        else StrictMath.pow((xd + 11.0 / 200.0) / (1.0 + 11.0 / 200.0), 12.0 / 5.0)).toFloat()
    }

    private fun applyInvGamma(x: Float): Float {
        val xd = x.toDouble()
        return (if (xd <= 7827.0 / 2500000.0) xd * (323.0 / 25.0)
        else StrictMath.pow(xd, 1.0 / (12.0 / 5.0)) * (1.0 + 11.0 / 200.0) - 11.0 / 200.0).toFloat()
    }

    private val CBRT_COEFFS = bits(
        "4046a09e6653ba70", "406808f46c6116e0", "405dca97439cae14", "402add70d2827500",
        "3fc4f15f83f55d2d", "402d9e20660edb21", "4062ff15c0285815", "406510d06a8112ce", "4040fecbc9e2c375"
    )

    /** OpenCV's softfloat cbrt (Turkowski's rational approximation on the mantissa, result truncated). */
    internal fun softCbrt(x: Float): Float {
        if (x == 0.0f) return 0.0f
        val bits = java.lang.Float.floatToRawIntBits(x)
        var ex = ((bits ushr 23) and 0xff) - 127
        var shx = ex % 3
        shx -= if (shx >= 0) 3 else 0
        ex = (ex - shx) / 3 - 1
        var fr = java.lang.Double.longBitsToDouble(((shx + 1023).toLong() shl 52) or ((bits and 0x7fffff).toLong() shl 29))
        val a = CBRT_COEFFS
        val num = (((a[0] * fr + a[1]) * fr + a[2]) * fr + a[3]) * fr + a[4]
        val den = (((a[5] * fr + a[6]) * fr + a[7]) * fr + a[8]) * fr + 1.0
        fr = num / den
        val mant = ((java.lang.Double.doubleToRawLongBits(fr) and 0x000fffffffffffffL) ushr 29).toInt()
        return java.lang.Float.intBitsToFloat((((ex + 127) and 0xff) shl 23) or mant)
    }

    /** softfloat mulAdd (one rounding): the product of two floats is exact in double. */
    private fun fmaF(a: Float, b: Float, c: Float): Float =
        java.math.BigDecimal(a.toDouble()).multiply(java.math.BigDecimal(b.toDouble()))
            .add(java.math.BigDecimal(c.toDouble())).toFloat()

    init {
        val f255 = 255.0f
        val intScale = (255 * (1 shl GAMMA_SHIFT)).toFloat()
        for (i in 0 until 256) gammaTab[i] = rintInt((intScale * applyGamma(i.toFloat() / f255)).toDouble())
        val invScale = 1.0f / INV_GAMMA_TAB_SIZE.toFloat()
        for (i in 0 until INV_GAMMA_TAB_SIZE) {
            invGammaTab[i] = rintInt((f255 * applyInvGamma(invScale * i.toFloat())).toDouble())
        }
        val lthresh = 216.0f / 24389.0f
        val lscale = 841.0f / 108.0f
        val lbias = 16.0f / 116.0f
        val cbScale = 1.0f / (f255 * (1 shl GAMMA_SHIFT).toFloat())
        val lshift2 = (1 shl LAB_SHIFT2).toFloat()
        for (i in 0 until CBRT_TAB_SIZE) {
            val x = cbScale * i.toFloat()
            cbrtTab[i] = rintInt((lshift2 * (if (x < lthresh) fmaF(x, lscale, lbias) else softCbrt(x))).toDouble())
        }
        for (i in 0 until 256) {
            val y: Int
            val ify: Int
            if (i <= 20) {
                y = rintInt(((i * BASE * 20 * 9).toFloat() / (17 * 29 * 29 * 29).toFloat()).toDouble())
                ify = rintInt((BASE.toFloat() * (16.0f / 116.0f + (i * 5).toFloat() / (3 * 17 * 29).toFloat())).toDouble())
            } else {
                val fy = (i * 100 * BASE).toFloat() / (255 * 116).toFloat() + (16 * BASE).toFloat() / 116.0f
                ify = rintInt(fy.toDouble())
                y = rintInt((fy * fy * fy / (BASE * BASE).toFloat()).toDouble())
            }
            labToYF[2 * i] = y
            labToYF[2 * i + 1] = ify
        }
        for (i in MIN_AB until BASE * 9 / 4 + MIN_AB) {
            abToXZ[i - MIN_AB] = if (i <= 3390) i * 108 / 841 - BASE * 16 / 116 * 108 / 841 else i * i / BASE * i / BASE
        }
        val lshift = (1 shl LAB_SHIFT).toDouble()
        for (i in 0 until 3) {
            for (j in 0 until 3) fwd[i * 3 + j] = rintInt(lshift * RGB2XYZ[i * 3 + j] / WHITE[i])
        }
        // inverse: row k of the output (R, G, B) gets XYZ2RGB row k scaled by the white point per column
        for (k in 0 until 3) {
            for (i in 0 until 3) inv[k * 3 + i] = rintInt(lshift * XYZ2RGB[k * 3 + i] * WHITE[i])
        }
    }

    private fun descale(x: Int, n: Int): Int = (x + (1 shl (n - 1))) shr n

    private fun sat8(v: Int): Int = if (v < 0) 0 else if (v > 255) 255 else v

    /** RGB uint8 interleaved -> L*a*b* uint8 interleaved (L scaled to 0..255, a/b offset by 128). */
    fun fromRgb(rgb: ByteArray): ByteArray {
        val out = ByteArray(rgb.size)
        val lscale = (116 * 255 + 50) / 100
        val lshiftL = -((16 * 255 * (1 shl LAB_SHIFT2) + 50) / 100)
        val c = fwd
        var i = 0
        while (i < rgb.size) {
            val r = gammaTab[rgb[i].toInt() and 0xff]
            val g = gammaTab[rgb[i + 1].toInt() and 0xff]
            val b = gammaTab[rgb[i + 2].toInt() and 0xff]
            val fX = cbrtTab[descale(r * c[0] + g * c[1] + b * c[2], LAB_SHIFT)]
            val fY = cbrtTab[descale(r * c[3] + g * c[4] + b * c[5], LAB_SHIFT)]
            val fZ = cbrtTab[descale(r * c[6] + g * c[7] + b * c[8], LAB_SHIFT)]
            out[i] = sat8(descale(lscale * fY + lshiftL, LAB_SHIFT2)).toByte()
            out[i + 1] = sat8(descale(500 * (fX - fY) + 128 * (1 shl LAB_SHIFT2), LAB_SHIFT2)).toByte()
            out[i + 2] = sat8(descale(200 * (fY - fZ) + 128 * (1 shl LAB_SHIFT2), LAB_SHIFT2)).toByte()
            i += 3
        }
        return out
    }

    /** L*a*b* uint8 interleaved -> RGB uint8 interleaved. */
    fun toRgb(lab: ByteArray): ByteArray {
        val out = ByteArray(lab.size)
        val shift = LAB_SHIFT + (14 - INV_GAMMA_SHIFT)
        val c = inv
        var i = 0
        while (i < lab.size) {
            val ll = lab[i].toInt() and 0xff
            val aa = lab[i + 1].toInt() and 0xff
            val bb = lab[i + 2].toInt() and 0xff
            val y = labToYF[2 * ll]
            val ify = labToYF[2 * ll + 1]
            val adiv = ((5 * aa * 53687 + (1 shl 7)) shr 13) - 128 * BASE / 500
            val bdiv = ((bb * 41943 + (1 shl 4)) shr 9) - 128 * BASE / 200 + 1
            val x = abToXZ[ify + adiv - MIN_AB]
            val z = abToXZ[ify - bdiv - MIN_AB]
            for (k in 0 until 3) {
                var v = descale(c[3 * k] * x + c[3 * k + 1] * y + c[3 * k + 2] * z, shift)
                v = max(0, min(INV_GAMMA_TAB_SIZE - 1, v))
                out[i + k] = sat8(invGammaTab[v]).toByte()
            }
            i += 3
        }
        return out
    }
}

/** `clahe`: cv2.createCLAHE(clip_limit, (tile, tile)) applied to L* of CIE L*a*b*, back to RGB. */
class Clahe(val clipLimit: Double, val tiles: Int) : ImageStep {
    override val name = "clahe"

    init {
        if (tiles < 1) throw CoreException("clahe: tile must be >= 1 (got $tiles)")
    }

    override fun apply(img: RgbImage): RgbImage {
        val lab = Lab8.fromRgb(img.data)
        val n = img.width * img.height
        val l = ByteArray(n)
        for (i in 0 until n) l[i] = lab[3 * i]
        val out = claheGrey(l, img.width, img.height)
        for (i in 0 until n) lab[3 * i] = out[i]
        return RgbImage(img.width, img.height, Lab8.toRgb(lab))
    }

    /** OpenCV's CLAHE on one 8-bit plane. */
    fun claheGrey(src: ByteArray, w: Int, h: Int): ByteArray {
        val tx = tiles
        val ty = tiles
        // the LUTs are computed on the image extended (REFLECT_101, bottom/right) to a multiple of the grid
        val ew = if (w % tx == 0) w else w + tx - (w % tx)
        val eh = if (h % ty == 0) h else h + ty - (h % ty)
        val tw = ew / tx
        val th = eh / ty
        val tileTotal = tw * th
        val lutScale = 255.0f / tileTotal.toFloat()
        var clip = 0
        if (clipLimit > 0.0) clip = max((clipLimit * tileTotal / 256).toInt(), 1)
        val lut = IntArray(tx * ty * 256)
        val hist = IntArray(256)
        for (k in 0 until tx * ty) {
            val ty0 = (k / tx) * th
            val tx0 = (k % tx) * tw
            java.util.Arrays.fill(hist, 0)
            for (y in ty0 until ty0 + th) {
                val sy = if (y < h) y else reflect101(y, h)
                val row = sy * w
                for (x in tx0 until tx0 + tw) {
                    val sx = if (x < w) x else reflect101(x, w)
                    hist[src[row + sx].toInt() and 0xff]++
                }
            }
            if (clip > 0) {
                var clipped = 0
                for (i in 0 until 256) {
                    if (hist[i] > clip) { clipped += hist[i] - clip; hist[i] = clip }
                }
                val batch = clipped / 256
                var residual = clipped - batch * 256
                for (i in 0 until 256) hist[i] += batch
                if (residual != 0) {
                    val step = max(256 / residual, 1)
                    var i = 0
                    while (i < 256 && residual > 0) { hist[i]++; i += step; residual-- }
                }
            }
            var sum = 0
            for (i in 0 until 256) {
                sum += hist[i]
                lut[k * 256 + i] = min(255, max(0, rintInt((sum.toFloat() * lutScale).toDouble())))
            }
        }
        // interpolation (float arithmetic in OpenCV's order)
        val invTw = 1.0f / tw.toFloat()
        val invTh = 1.0f / th.toFloat()
        val ind1 = IntArray(w)
        val ind2 = IntArray(w)
        val xa = FloatArray(w)
        val xa1 = FloatArray(w)
        for (x in 0 until w) {
            val txf = x.toFloat() * invTw - 0.5f
            var t1 = Math.floor(txf.toDouble()).toInt()
            var t2 = t1 + 1
            xa[x] = txf - t1.toFloat()
            xa1[x] = 1.0f - xa[x]
            t1 = max(t1, 0)
            t2 = min(t2, tx - 1)
            ind1[x] = t1 * 256
            ind2[x] = t2 * 256
        }
        val out = ByteArray(w * h)
        for (y in 0 until h) {
            val tyf = y.toFloat() * invTh - 0.5f
            var t1 = Math.floor(tyf.toDouble()).toInt()
            var t2 = t1 + 1
            val ya = tyf - t1.toFloat()
            val ya1 = 1.0f - ya
            t1 = max(t1, 0)
            t2 = min(t2, ty - 1)
            val p1 = t1 * tx * 256
            val p2 = t2 * tx * 256
            for (x in 0 until w) {
                val v = src[y * w + x].toInt() and 0xff
                val i1 = ind1[x] + v
                val i2 = ind2[x] + v
                val res = (lut[p1 + i1].toFloat() * xa1[x] + lut[p1 + i2].toFloat() * xa[x]) * ya1 +
                    (lut[p2 + i1].toFloat() * xa1[x] + lut[p2 + i2].toFloat() * xa[x]) * ya
                out[y * w + x] = min(255, max(0, rintInt(res.toDouble()))).toByte()
            }
        }
        return out
    }
}

/**
 * `ben_graham`: `weight·x − weight·GaussianBlur(x, σ) + offset` with σ = max(0.5, sigma_frac × width), then
 * everything outside a centred filled circle of radius round(mask_radius × min(h, w) / 2) set to 0.
 */
class BenGraham(val sigmaFrac: Double, val weight: Double, val offset: Double, val maskRadius: Double) : ImageStep {
    override val name = "ben_graham"

    override fun apply(img: RgbImage): RgbImage {
        val w = img.width
        val h = img.height
        val sigma = max(0.5, sigmaFrac * w)
        val blur = gaussianBlur(img, sigma)
        val a = weight.toFloat()
        val b = (-weight).toFloat()
        val g = offset.toFloat()
        val out = ByteArray(img.data.size)
        for (i in out.indices) {
            val s = (img.data[i].toInt() and 0xff).toFloat()
            val t = (blur[i].toInt() and 0xff).toFloat()
            val v = s * a + t * b + g
            out[i] = min(255, max(0, rintInt(v.toDouble()))).toByte()
        }
        if (maskRadius > 0) {
            val mask = circleMask(w, h, w / 2, h / 2, pyRound(maskRadius * min(h, w) / 2.0).toInt())
            for (p in 0 until w * h) if (!mask[p]) { out[3 * p] = 0; out[3 * p + 1] = 0; out[3 * p + 2] = 0 }
        }
        return RgbImage(w, h, out)
    }

    companion object {
        /** cv2.GaussianBlur(img, (0, 0), sigma) on uint8: OpenCV's bit-exact fixed-point path. */
        fun gaussianBlur(img: RgbImage, sigma: Double): ByteArray {
            val w = img.width
            val h = img.height
            val ksize = rintInt(sigma * 3.0 * 2.0 + 1.0) or 1
            val kx = if (w == 1) intArrayOf(256) else fixedKernel(ksize, sigma)
            val ky = if (h == 1) intArrayOf(256) else fixedKernel(ksize, sigma)
            val rx = kx.size / 2
            val ry = ky.size / 2
            val d = img.data
            val rows = IntArray(w * h * 3)
            val xs = IntArray(w + 2 * rx) { reflect101(it - rx, w) }
            for (y in 0 until h) {
                val base = y * w * 3
                for (x in 0 until w) {
                    for (c in 0 until 3) {
                        var v = 0
                        for (j in kx.indices) v += kx[j] * (d[base + xs[x + j] * 3 + c].toInt() and 0xff)
                        rows[base + x * 3 + c] = v
                    }
                }
            }
            val out = ByteArray(w * h * 3)
            val ys = IntArray(h + 2 * ry) { reflect101(it - ry, h) }
            for (y in 0 until h) {
                for (k in 0 until w * 3) {
                    var v = 0L
                    for (j in ky.indices) v += ky[j].toLong() * rows[ys[y + j] * w * 3 + k]
                    out[y * w * 3 + k] = min(255L, (v + (1L shl 15)) shr 16).toByte()
                }
            }
            return out
        }

        /** getGaussianKernelBitExact + getGaussianKernelFixedPoint_ED with 8 fraction bits (sums to 256). */
        fun fixedKernel(n: Int, sigma: Double): IntArray {
            val half = (n - 1) / 2
            val scale2x = -0.125 / (sigma * sigma)
            val values = DoubleArray(half)
            var sum = 0.0
            var x = 1 - n
            for (i in 0 until half) {
                val t = StrictMath.exp((x * x).toDouble() * scale2x)
                values[i] = t
                sum += t
                x += 2
            }
            sum *= 2.0
            sum += 1.0
            val mul = 1.0 / sum
            val out = IntArray(n)
            var err = 0.0
            var isum = 0
            for (i in 0 until half) {
                val adj = values[i] * mul * 256.0 + err
                val v = rintInt(adj)
                err = adj - v
                out[i] = v
                out[n - 1 - i] = v
                isum += v
            }
            out[half] = 256 - 2 * isum
            return out
        }

        /** cv2.circle(mask, (cx, cy), radius, 1, -1): OpenCV's filled midpoint circle (LINE_8, no shift). */
        fun circleMask(w: Int, h: Int, cx: Int, cy: Int, radius: Int): BooleanArray {
            val m = BooleanArray(w * h)
            fun span(y: Int, x0: Int, x1: Int) {
                if (y < 0 || y >= h) return
                val a = max(x0, 0)
                val b = min(x1, w - 1)
                for (x in a..b) m[y * w + x] = true
            }
            var err = 0
            var dx = radius
            var dy = 0
            var plus = 1
            var minus = (radius shl 1) - 1
            while (dx >= dy) {
                span(cy - dy, cx - dx, cx + dx)
                span(cy + dy, cx - dx, cx + dx)
                span(cy - dx, cx - dy, cx + dy)
                span(cy + dx, cx - dy, cx + dy)
                dy++
                err += plus
                plus += 2
                val mask = (if (err <= 0) 1 else 0) - 1
                err -= minus and mask
                dx += mask
                minus -= mask and 2
            }
            return m
        }
    }
}
