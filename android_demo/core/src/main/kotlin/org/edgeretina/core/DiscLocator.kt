package org.edgeretina.core

import kotlin.math.abs
import kotlin.math.atan2
import kotlin.math.exp
import kotlin.math.floor
import kotlin.math.max
import kotlin.math.min
import kotlin.math.sqrt

/**
 * Optic-disc detection in the pixels of the image given to [DiscLocator.locate] (the Python
 * `edgeretina.preprocess.DiscDetection`). `found == false` means **flagged**: [reason] says why; for
 * "no field of view" / "no disc-like spot" (x, y) is the fallback (the FOV centre), otherwise the best,
 * untrusted candidate. An app should ask for a retake when a detection is flagged.
 */
class DiscDetection(
    val x: Double, val y: Double, val diameter: Double, val confidence: Double, val found: Boolean,
    val score: Double = 0.0, val margin: Double = 0.0, val roundness: Double = 0.0, val reason: String = ""
) {
    val flagged: Boolean get() = !found
    val fallback: Boolean get() = reason == "no field of view" || reason == "no disc-like spot"

    /** The same detection in another image's pixels: x' = x·sx + dx (diameter scales by sx). */
    fun scaled(sx: Double, sy: Double, dx: Double, dy: Double) =
        DiscDetection(x * sx + dx, y * sy + dy, diameter * sx, confidence, found, score, margin, roundness, reason)

    override fun toString() = "DiscDetection(x=$x, y=$y, diameter=$diameter, confidence=$confidence, found=$found, " +
        "score=$score, margin=$margin, roundness=$roundness, reason='$reason')"

    fun toMap(): Map<String, Any?> = linkedMapOf(
        "x" to x, "y" to y, "diameter" to diameter, "confidence" to confidence, "found" to found,
        "score" to score, "margin" to margin, "roundness" to roundness, "reason" to reason
    )
}

/** The `onh_crop` parameters (names and defaults of the Python step, docs/data.md). */
class DiscParams(
    val diameters: Double = 2.0, val discFraction: Double = 0.15, val threshold: Int = 10,
    val minConfidence: Double = 2.0, val vesselWeight: Double = 1.0, val verticalPrior: Double = 4.0,
    val edgePenalty: Double = 3.5, val searchMargin: Double = 0.07, val roundnessWeight: Double = 1.0,
    val foveaWeight: Double = 0.0, val minMargin: Double = 0.75, val minRoundness: Double = 0.2,
    val redWeight: Double = 0.25, val vesselClip: Boolean = true, val refine: Boolean = false
) {
    companion object {
        val NAMES = listOf("diameters", "disc_fraction", "threshold", "min_confidence", "vessel_weight",
            "vertical_prior", "edge_penalty", "search_margin", "roundness_weight", "fovea_weight", "min_margin",
            "min_roundness", "red_weight", "vessel_clip", "refine")

        /** The locator parameters of an `onh_crop` step, or of a `two_view` step ([extra] = its own keys). */
        internal fun fromJson(p: JsonObj, step: String = "onh_crop", extra: List<String> = listOf()): DiscParams {
            val unknown = p.map.keys.filter { it !in NAMES && it !in extra }
            if (unknown.isNotEmpty()) {
                throw UnsupportedStepException("${p.where}: unknown $step parameter(s) ${unknown.joinToString(", ")} " +
                    "(from a newer edgeretina?); supported: ${(extra + NAMES).joinToString(", ")}")
            }
            val d = DiscParams()
            return DiscParams(
                p.doubleOr("diameters", d.diameters)!!, p.doubleOr("disc_fraction", d.discFraction)!!,
                p.intOr("threshold", d.threshold)!!, p.doubleOr("min_confidence", d.minConfidence)!!,
                p.doubleOr("vessel_weight", d.vesselWeight)!!, p.doubleOr("vertical_prior", d.verticalPrior)!!,
                p.doubleOr("edge_penalty", d.edgePenalty)!!, p.doubleOr("search_margin", d.searchMargin)!!,
                p.doubleOr("roundness_weight", d.roundnessWeight)!!, p.doubleOr("fovea_weight", d.foveaWeight)!!,
                p.doubleOr("min_margin", d.minMargin)!!, p.doubleOr("min_roundness", d.minRoundness)!!,
                p.doubleOr("red_weight", d.redWeight)!!, p.boolOr("vessel_clip", d.vesselClip),
                p.boolOr("refine", d.refine)
            )
        }
    }
}

/** The `onh_crop` step: a square window of `diameters` disc diameters around the detected disc. */
class OnhCrop(val params: DiscParams) : ImageStep {
    override val name = "onh_crop"

    override fun apply(img: RgbImage): RgbImage = cropWithInfo(img).first

    /**
     * Python `onh_crop_subpixel`: the window at the sub-pixel disc centre, cut by [cropBilinear] (issue 18).
     */
    fun cropSubpixel(img: RgbImage): Pair<RgbImage, DiscDetection> {
        val det = DiscLocator.locate(img, params, subpixel = true)
        val side = max(8, pyRound(params.diameters * det.diameter).toInt())
        return Pair(cropBilinear(img, det.x - side / 2.0, det.y - side / 2.0, side), det)
    }

    fun cropWithInfo(img: RgbImage): Pair<RgbImage, DiscDetection> {
        val det = DiscLocator.locate(img, params)
        val side = max(8, pyRound(params.diameters * det.diameter).toInt())
        val x0 = pyRound(det.x - side / 2.0).toInt()
        val y0 = pyRound(det.y - side / 2.0).toInt()
        val out = ByteArray(side * side * 3)
        val sx0 = max(0, x0)
        val sy0 = max(0, y0)
        val sx1 = min(img.width, x0 + side)
        val sy1 = min(img.height, y0 + side)
        if (sx1 > sx0 && sy1 > sy0) {
            for (y in sy0 until sy1) {
                System.arraycopy(img.data, (y * img.width + sx0) * 3, out, ((y - y0) * side + (sx0 - x0)) * 3,
                    (sx1 - sx0) * 3)
            }
        }
        return Pair(RgbImage(side, side, out), det)
    }
}

/**
 * Python `crop_bilinear`: a side x side window whose top-left pixel centre is the fractional (x0, y0), bilinear
 * with 8-bit weights on a 1/16-px grid, a = 16·round(16·frac) (half to even), (Σ w·p + 2^15) >> 16, zero outside
 * the image. The grid absorbs the ~1e-4 px by which this port's float32 locator map can move the centre.
 */
internal fun cropBilinear(img: RgbImage, x0: Double, y0: Double, side: Int): RgbImage {
    var ix = floor(x0).toInt()
    var iy = floor(y0).toInt()
    var ax = 16 * pyRound((x0 - ix) * 16).toInt()
    var ay = 16 * pyRound((y0 - iy) * 16).toInt()
    if (ax == 256) { ix += 1; ax = 0 }
    if (ay == 256) { iy += 1; ay = 0 }
    val n = side + 1
    val win = IntArray(n * n * 3)
    val sx0 = max(0, ix)
    val sy0 = max(0, iy)
    val sx1 = min(img.width, ix + n)
    val sy1 = min(img.height, iy + n)
    for (y in sy0 until sy1) for (x in sx0 until sx1) for (c in 0 until 3) {
        win[((y - iy) * n + (x - ix)) * 3 + c] = img.data[(y * img.width + x) * 3 + c].toInt() and 0xff
    }
    val w00 = (256 - ax) * (256 - ay)
    val w01 = ax * (256 - ay)
    val w10 = (256 - ax) * ay
    val w11 = ax * ay
    val out = ByteArray(side * side * 3)
    for (y in 0 until side) for (x in 0 until side) for (c in 0 until 3) {
        val v = w00 * win[(y * n + x) * 3 + c] + w01 * win[(y * n + x + 1) * 3 + c] +
            w10 * win[((y + 1) * n + x) * 3 + c] + w11 * win[((y + 1) * n + x + 1) * 3 + c]
        out[(y * side + x) * 3 + c] = ((v + (1 shl 15)) shr 16).toByte()
    }
    return RgbImage(side, side, out)
}

/** Python's round(): half to even. */
internal fun pyRound(v: Double): Double = Math.rint(v)

/**
 * Port of `edgeretina.preprocess.locate_disc` (docs/data.md, "Optic-nerve-head localisation"): every step
 * reproduces the OpenCV/numpy operation the Python code uses (INTER_AREA, 3x3 chamfer distance transform,
 * Gaussian blur with OpenCV's kernel and REFLECT_101 border, 8-bit median blur, rectangular dilation, numpy
 * percentiles/medians) so that both sides pick the same disc (tests/test_disc_locator.py: same centre within
 * 1 px at the 192-px work resolution on the hand-checked photos).
 */
object DiscLocator {
    const val WORK_SIZE = 192
    private const val N_CANDIDATES = 6
    private const val N_SECTORS = 8

    /**
     * [subpixel] (issue 18, Python `locate_disc(subpixel=True)`): the centre is the map peak moved to the vertex
     * of the parabola through it and its neighbours ([subpixelPeak]), so it follows a moved eye continuously.
     */
    fun locate(img: RgbImage, p: DiscParams = DiscParams(), subpixel: Boolean = false): DiscDetection {
        val h = img.height
        val w = img.width
        val s0 = WORK_SIZE.toDouble() / max(h, w)
        val small = if (s0 < 1) {
            Resize(max(1, pyRound(h * s0).toInt()), max(1, pyRound(w * s0).toInt()), "area").apply(img)
        } else img
        val s = small.width.toDouble() / w
        val sh = small.height
        val sw = small.width
        val n = sh * sw
        fun toImg(v: Double) = (v + 0.5) / s - 0.5

        val mask = cleanFovMask(small, p.threshold)
        var count = 0
        var y0 = Int.MAX_VALUE; var y1 = -1; var x0 = Int.MAX_VALUE; var x1 = -1
        for (y in 0 until sh) for (x in 0 until sw) if (mask[y * sw + x]) {
            count++
            if (y < y0) y0 = y
            if (y + 1 > y1) y1 = y + 1
            if (x < x0) x0 = x
            if (x + 1 > x1) x1 = x + 1
        }
        if (count < 0.05 * n) {
            val b = fovBox(small, p.threshold)
            val fd = max(b[1] - b[0], b[3] - b[2])
            return DiscDetection(toImg((b[2] + b[3] - 1) / 2.0), toImg((b[0] + b[1] - 1) / 2.0),
                p.discFraction * fd / s, 0.0, false, reason = "no field of view")
        }
        val fovD = max(y1 - y0, x1 - x0).toDouble()
        val dd = p.discFraction * fovD
        val cxF = (x0 + x1) / 2.0
        val cyF = (y0 + y1) / 2.0
        fun fallback(score: Double, reason: String) =
            DiscDetection(toImg(cxF - 0.5), toImg(cyF - 0.5), dd / s, 0.0, false, score, 0.0, 0.0, reason)

        val dist = distanceTransform(mask, sw, sh)
        var mPx = p.searchMargin * fovD
        var search = BooleanArray(n) { dist[it] > mPx.toFloat() }
        if (search.count { it } < 0.02 * n) {
            var dmax = 0f
            for (v in dist) dmax = max(dmax, v)
            mPx = 0.5 * dmax
            search = BooleanArray(n) { dist[it] > mPx.toFloat() }
        }
        var core = BooleanArray(n) { dist[it] > (0.5 * mPx).toFloat() }
        if (core.count { it } < 0.05 * n) core = mask.copyOf()

        // brightness
        val rw = p.redWeight.toFloat()
        val gw = (1.0 - p.redWeight).toFloat()
        val lumRaw = FloatArray(n)
        val d = small.data
        for (i in 0 until n) {
            lumRaw[i] = rw * (d[3 * i].toInt() and 0xff).toFloat() + gw * (d[3 * i + 1].toInt() and 0xff).toFloat()
        }
        val p995 = percentile(select(lumRaw, mask), 99.5)
        for (i in 0 until n) lumRaw[i] = min(lumRaw[i], p995)
        val medCore = median(select(lumRaw, core))
        val lum = FloatArray(n) { if (core[it]) lumRaw[it] else medCore }
        val g1 = gaussianBlur(lum, sw, sh, max(1.0, dd / 4))
        val g2 = wideBlur(lum, sw, sh, max(2.0, 2 * dd))
        val bright = FloatArray(n) { g1[it] - g2[it] }
        val resp = zscore(bright, search, 1.0)
        if (p.vesselWeight != 0.0) {
            val gCore = ByteArray(n)
            var cnt = 0
            for (i in 0 until n) if (core[i]) gCore[cnt++] = d[3 * i + 1]
            val gMed = medianU8(gCore, cnt)
            var g8 = IntArray(n) { if (core[it]) d[3 * it + 1].toInt() and 0xff else gMed }
            val k = max(3, pyRound(dd / 2).toInt() or 1)
            if (p.vesselClip) {
                val mb = medianBlur(g8, sw, sh, k)
                g8 = IntArray(n) { min(g8[it], mb[it]) }
            }
            val mb2 = medianBlur(g8, sw, sh, k)
            val vess = FloatArray(n) { max(mb2[it].toFloat() - g8[it], 0f) }
            val vz = zscore(gaussianBlur(vess, sw, sh, max(1.0, dd / 2)), search, 0.25)
            val vw = p.vesselWeight.toFloat()
            for (i in 0 until n) resp[i] = resp[i] + vw * vz[i]
        }
        if (p.verticalPrior != 0.0) {
            val k2 = (2.0 / max(fovD, 1.0)).toFloat()
            val vp = p.verticalPrior.toFloat()
            for (y in 0 until sh) {
                val dy = (y.toFloat() - cyF.toFloat() + 0.5f) * k2
                val pen = vp * (dy * dy)
                for (x in 0 until sw) resp[y * sw + x] = resp[y * sw + x] - pen
            }
        }
        if (p.edgePenalty != 0.0) {
            val den = max(dd / 2, 1.0).toFloat()
            val ep = p.edgePenalty.toFloat()
            for (i in 0 until n) resp[i] = resp[i] - ep * min(max(1f - dist[i] / den, 0f), 1f)
        }
        val masked = FloatArray(n) { if (search[it]) resp[it] else Float.NEGATIVE_INFINITY }
        val kk = max(3, pyRound(dd).toInt() or 1)
        val dil = dilateRect(masked, sw, sh, kk)
        val peaks = ArrayList<Int>()
        for (i in 0 until n) if (search[i] && masked[i] >= dil[i]) peaks.add(i)
        if (peaks.isEmpty()) return fallback(0.0, "no disc-like spot")
        // stable sort by score, ties in raster order (numpy argsort kind="stable"); a plateau's equal peaks
        // (closer than kk/2) count once
        val order = ArrayList<Int>()
        for (i in peaks.sortedWith(compareBy<Int> { -masked[it] })) {
            if (order.all { j -> max(abs(i / sw - j / sw), abs(i % sw - j % sw)) > kk / 2 }) {
                order.add(i)
                if (order.size == N_CANDIDATES) break
            }
        }

        var sum = 0.0
        var sq = 0.0
        var m = 0
        for (i in 0 until n) if (mask[i]) { sum += lumRaw[i]; m++ }
        val mean = sum / m
        for (i in 0 until n) if (mask[i]) { val t = lumRaw[i] - mean; sq += t * t }
        val spread = sqrt(sq / m) + 1e-6
        val geo = SectorGeometry(dd)
        class Cand(val total: Double, val x: Int, val y: Int, val rnd: Double)
        val cands = ArrayList<Cand>()
        for (idx in order) {
            val yy = idx / sw
            val xx = idx % sw
            val base = masked[idx].toDouble()
            val o = max(1, pyRound(0.2 * dd).toInt())
            var rnd = roundness(lumRaw, mask, sw, sh, xx, yy, geo, spread)
            if (rnd < 1.0) {
                for ((ox, oy) in listOf(Pair(o, 0), Pair(-o, 0), Pair(0, o), Pair(0, -o))) {
                    rnd = max(rnd, roundness(lumRaw, mask, sw, sh, xx + ox, yy + oy, geo, spread))
                }
            }
            val fov = if (p.foveaWeight != 0.0) foveaTerm(bright, mask, sw, sh, xx, yy, dd) else 0.0
            val total = base + p.roundnessWeight * min(max(rnd, -3.0), 3.0) + p.foveaWeight * fov
            cands.add(Cand(total, xx, yy, rnd))
        }
        val sorted = cands.sortedWith(compareBy<Cand> { -it.total })  // stable, like Python's sort
        val best = sorted[0]
        val total = best.total
        var bx = best.x
        var by = best.y
        val rnd = best.rnd
        val margin = if (sorted.size > 1) total - sorted[1].total else 10.0
        if (total.isNaN() || total.isInfinite() || total < p.minConfidence) {
            return fallback(if (total.isNaN() || total.isInfinite()) 0.0 else total, "no disc-like spot")
        }
        val atBorder = dist[by * sw + bx] <= (mPx + 1.5).toFloat()
        if (p.refine) {
            val rr = max(1, pyRound(0.4 * dd).toInt())
            var bestV = Float.NEGATIVE_INFINITY
            var bi = -1
            for (y in max(0, by - rr) until min(sh, by + rr + 1)) for (x in max(0, bx - rr) until min(sw, bx + rr + 1)) {
                val i = y * sw + x
                val r = sqrt(((y - by) * (y - by) + (x - bx) * (x - bx)).toDouble())
                if (r <= rr && mask[i] && bright[i] > bestV) { bestV = bright[i]; bi = i }
            }
            if (bi >= 0) { bx = bi % sw; by = bi / sw }
        }
        val crit = arrayListOf(total / max(p.minConfidence, 1e-6), margin / max(p.minMargin, 1e-6))
        if (p.minRoundness > 0) crit.add(rnd / p.minRoundness)
        var conf = min(max(0.5 * crit.min()!!, 0.0), 1.0)
        var reason = ""
        if (atBorder) { reason = "at search border"; conf = 0.0 }
        else if (margin < p.minMargin) reason = "ambiguous"
        else if (rnd < p.minRoundness) reason = "not round"
        if (reason.isNotEmpty()) conf = min(conf, 0.49)
        val fx = if (subpixel && !p.refine) subpixelPeak(masked, sw, sh, bx, by) else doubleArrayOf(bx.toDouble(), by.toDouble())
        return DiscDetection(toImg(fx[0]), toImg(fx[1]), dd / s, conf, reason.isEmpty(), total,
            margin, rnd, reason)
    }

    /**
     * Python `subpixel_peak`: (x, y) moved to the vertex of the parabola through the map at c-1, c, c+1 per axis,
     * the offset clipped to ±0.5; an axis at the map border, with a non-finite neighbour or without a maximum
     * keeps its integer value. Double arithmetic on the float32 map, like numpy's float() of it.
     */
    fun subpixelPeak(m: FloatArray, w: Int, h: Int, x: Int, y: Int): DoubleArray {
        val out = DoubleArray(2)
        for (axis in 0 until 2) {
            val c = if (axis == 0) x else y
            val n = if (axis == 0) w else h
            if (c <= 0 || c >= n - 1) { out[axis] = c.toDouble(); continue }
            val a = (if (axis == 0) m[y * w + c - 1] else m[(c - 1) * w + x]).toDouble()
            val b = (if (axis == 0) m[y * w + c] else m[c * w + x]).toDouble()
            val d = (if (axis == 0) m[y * w + c + 1] else m[(c + 1) * w + x]).toDouble()
            val curv = a - 2.0 * b + d
            if (a.isNaN() || a.isInfinite() || d.isNaN() || d.isInfinite() || curv >= 0.0) {
                out[axis] = c.toDouble(); continue
            }
            out[axis] = c + min(0.5, max(-0.5, 0.5 * (a - d) / curv))
        }
        return out
    }

    // ------------------------------------------------------------------------------------------- FOV mask
    /** fov_box of the Python preprocess (rows/cols with > 1 % FOV pixels): [y0, y1, x0, x1]. */
    private fun fovBox(img: RgbImage, threshold: Int): IntArray {
        val w = img.width
        val h = img.height
        val rows = IntArray(h)
        val cols = IntArray(w)
        for (y in 0 until h) for (x in 0 until w) if (maxRgb(img, y * w + x) > threshold) { rows[y]++; cols[x]++ }
        var y0 = -1; var y1 = -1; var x0 = -1; var x1 = -1
        for (y in 0 until h) if (rows[y] > 0.01 * w) { if (y0 < 0) y0 = y; y1 = y + 1 }
        for (x in 0 until w) if (cols[x] > 0.01 * h) { if (x0 < 0) x0 = x; x1 = x + 1 }
        if (y0 < 0 || x0 < 0) return intArrayOf(0, h, 0, w)
        return intArrayOf(y0, y1, x0, x1)
    }

    private fun maxRgb(img: RgbImage, i: Int): Int {
        val d = img.data
        return max(d[3 * i].toInt() and 0xff, max(d[3 * i + 1].toInt() and 0xff, d[3 * i + 2].toInt() and 0xff))
    }

    /** max(R,G,B) > threshold, opened with OpenCV's 5x5 ellipse, largest 8-connected component, holes filled. */
    internal fun cleanFovMask(img: RgbImage, threshold: Int): BooleanArray {
        val w = img.width
        val h = img.height
        val m0 = BooleanArray(w * h) { maxRgb(img, it) > threshold }
        // 5x5 MORPH_ELLIPSE: rows 0 and 4 hold only the centre column
        val offs = ArrayList<IntArray>()
        for (dy in -2..2) for (dx in -2..2) if (abs(dy) < 2 || dx == 0) offs.add(intArrayOf(dx, dy))
        // erode: outside the image counts as set (OpenCV's default border for erosion)
        val er = BooleanArray(w * h)
        for (y in 0 until h) for (x in 0 until w) {
            var v = true
            for (o in offs) {
                val xx = x + o[0]; val yy = y + o[1]
                if (xx in 0 until w && yy in 0 until h && !m0[yy * w + xx]) { v = false; break }
            }
            er[y * w + x] = v
        }
        val m = BooleanArray(w * h)
        for (y in 0 until h) for (x in 0 until w) {
            var v = false
            for (o in offs) {
                val xx = x + o[0]; val yy = y + o[1]
                if (xx in 0 until w && yy in 0 until h && er[yy * w + xx]) { v = true; break }
            }
            m[y * w + x] = v
        }
        // largest 8-connected component (first in raster order on a tie)
        val lab = IntArray(w * h)
        var next = 0
        var bestLab = 0
        var bestArea = 0
        val stack = IntArray(w * h)
        for (start in 0 until w * h) {
            if (!m[start] || lab[start] != 0) continue
            next++
            var sp = 0
            stack[sp++] = start
            lab[start] = next
            var area = 0
            while (sp > 0) {
                val i = stack[--sp]
                area++
                val x = i % w; val y = i / w
                for (dy in -1..1) for (dx in -1..1) {
                    val xx = x + dx; val yy = y + dy
                    if (xx in 0 until w && yy in 0 until h) {
                        val j = yy * w + xx
                        if (m[j] && lab[j] == 0) { lab[j] = next; stack[sp++] = j }
                    }
                }
            }
            if (area > bestArea) { bestArea = area; bestLab = next }
        }
        if (next == 0) return m
        // holes: background 4-connected to the image border stays background
        val W = w + 2
        val H = h + 2
        val outside = BooleanArray(W * H)
        fun isBg(xx: Int, yy: Int): Boolean =
            xx == 0 || yy == 0 || xx == W - 1 || yy == H - 1 || lab[(yy - 1) * w + (xx - 1)] != bestLab
        var sp = 0
        val st = IntArray(W * H)
        st[sp++] = 0
        outside[0] = true
        while (sp > 0) {
            val i = st[--sp]
            val x = i % W; val y = i / W
            for ((dx, dy) in arrayOf(intArrayOf(1, 0), intArrayOf(-1, 0), intArrayOf(0, 1), intArrayOf(0, -1))) {
                val xx = x + dx; val yy = y + dy
                if (xx in 0 until W && yy in 0 until H) {
                    val j = yy * W + xx
                    if (!outside[j] && isBg(xx, yy)) { outside[j] = true; st[sp++] = j }
                }
            }
        }
        return BooleanArray(w * h) { !outside[(it / w + 1) * W + (it % w + 1)] }
    }

    /** cv2.distanceTransform(pad(mask, 1), DIST_L2, 3)[1:-1, 1:-1]: 3x3 chamfer (0.955, 1.3693), 16-bit fixed point. */
    internal fun distanceTransform(mask: BooleanArray, w: Int, h: Int): FloatArray {
        val W = w + 2
        val H = h + 2
        val hv = Math.round(0.955 * 65536).toLong()
        val dg = Math.round(1.3693 * 65536).toLong()
        val inf = Long.MAX_VALUE / 4
        val t = LongArray(W * H)
        for (y in 0 until H) for (x in 0 until W) {
            val inside = x in 1..w && y in 1..h && mask[(y - 1) * w + (x - 1)]
            t[y * W + x] = if (inside) inf else 0L
        }
        fun at(x: Int, y: Int) = if (x in 0 until W && y in 0 until H) t[y * W + x] else inf
        for (y in 0 until H) for (x in 0 until W) {
            val i = y * W + x
            if (t[i] == 0L) continue
            var v = t[i]
            v = min(v, at(x - 1, y - 1) + dg); v = min(v, at(x, y - 1) + hv)
            v = min(v, at(x + 1, y - 1) + dg); v = min(v, at(x - 1, y) + hv)
            t[i] = v
        }
        for (y in H - 1 downTo 0) for (x in W - 1 downTo 0) {
            val i = y * W + x
            var v = t[i]
            if (v <= hv) continue
            v = min(v, at(x + 1, y + 1) + dg); v = min(v, at(x, y + 1) + hv)
            v = min(v, at(x - 1, y + 1) + dg); v = min(v, at(x + 1, y) + hv)
            t[i] = v
        }
        val scale = 1.0f / 65536f
        return FloatArray(w * h) { (t[(it / w + 1) * W + (it % w + 1)] * scale.toDouble()).toFloat() }
    }

    // ------------------------------------------------------------------------------------------ filters
    /** OpenCV's Gaussian kernel for float images (radius 4σ), as float32 like getGaussianKernel(CV_32F). */
    private fun gaussianKernel(sigma: Double): FloatArray {
        val n = Math.rint(sigma * 4 * 2 + 1).toInt() or 1  // cvRound(σ·4·2 + 1) | 1 (float images)
        val k = FloatArray(n)
        val scale2 = -0.5 / (sigma * sigma)
        var sum = 0.0
        for (i in 0 until n) {
            val x = i - (n - 1) * 0.5
            k[i] = exp(scale2 * x * x).toFloat()
            sum += k[i]
        }
        val inv = 1.0 / sum
        for (i in 0 until n) k[i] = (k[i] * inv).toFloat()
        return k
    }

    /** BORDER_REFLECT_101 index. */
    private fun reflect101(i: Int, n: Int): Int {
        if (n == 1) return 0
        var j = i
        while (j < 0 || j >= n) {
            j = if (j < 0) -j else 2 * n - 2 - j
        }
        return j
    }

    /** cv2.GaussianBlur(a, (0, 0), sigma) on a float32 image (separable, REFLECT_101 border). */
    internal fun gaussianBlur(a: FloatArray, w: Int, h: Int, sigma: Double): FloatArray {
        val k = gaussianKernel(sigma)
        val r = k.size / 2
        val tmp = FloatArray(w * h)
        for (y in 0 until h) for (x in 0 until w) {
            var s = k[r] * a[y * w + x]
            for (j in 1..r) s += k[r + j] * (a[y * w + reflect101(x - j, w)] + a[y * w + reflect101(x + j, w)])
            tmp[y * w + x] = s
        }
        val out = FloatArray(w * h)
        for (y in 0 until h) for (x in 0 until w) {
            var s = k[r] * tmp[y * w + x]
            for (j in 1..r) s += k[r + j] * (tmp[reflect101(y - j, h) * w + x] + tmp[reflect101(y + j, h) * w + x])
            out[y * w + x] = s
        }
        return out
    }

    /** The Python _wide_blur: INTER_AREA to (w/4, h/4), GaussianBlur(σ/4), INTER_LINEAR back to (w, h). */
    private fun wideBlur(a: FloatArray, w: Int, h: Int, sigma: Double): FloatArray {
        val sw = max(1, w / 4)
        val sh = max(1, h / 4)
        val small = areaFloat(a, w, h, sw, sh)
        val b = gaussianBlur(small, sw, sh, max(0.5, sigma / 4))
        return linearFloat(b, sw, sh, w, h)
    }

    private class AreaTab(val di: IntArray, val si: IntArray, val alpha: FloatArray)

    private fun areaTab(ssize: Int, dsize: Int, scale: Double): AreaTab {
        val di = ArrayList<Int>()
        val si = ArrayList<Int>()
        val al = ArrayList<Float>()
        for (dx in 0 until dsize) {
            val fsx1 = dx * scale
            val fsx2 = fsx1 + scale
            val cellWidth = min(scale, ssize - fsx1)
            var sx1 = Math.ceil(fsx1).toInt()
            var sx2 = floor(fsx2).toInt()
            sx2 = min(sx2, ssize - 1)
            sx1 = min(sx1, sx2)
            if (sx1 - fsx1 > 1e-3) { di.add(dx); si.add(sx1 - 1); al.add(((sx1 - fsx1) / cellWidth).toFloat()) }
            for (sx in sx1 until sx2) { di.add(dx); si.add(sx); al.add((1.0 / cellWidth).toFloat()) }
            if (fsx2 - sx2 > 1e-3) {
                di.add(dx); si.add(sx2); al.add((min(min(fsx2 - sx2, 1.0), cellWidth) / cellWidth).toFloat())
            }
        }
        return AreaTab(di.toIntArray(), si.toIntArray(), al.toFloatArray())
    }

    /** cv2.resize(float32, INTER_AREA) when shrinking. */
    private fun areaFloat(a: FloatArray, w: Int, h: Int, dw: Int, dh: Int): FloatArray {
        if (dw == w && dh == h) return a.copyOf()
        val scaleX = w.toDouble() / dw
        val scaleY = h.toDouble() / dh
        val ix = Math.round(scaleX).toInt()
        val iy = Math.round(scaleY).toInt()
        val out = FloatArray(dw * dh)
        if (abs(scaleX - ix) < 2.220446049250313e-16 && abs(scaleY - iy) < 2.220446049250313e-16) {
            val inv = 1.0f / (ix * iy)
            for (y in 0 until dh) for (x in 0 until dw) {
                var s = 0f
                for (yy in 0 until iy) for (xx in 0 until ix) s += a[(y * iy + yy) * w + x * ix + xx]
                out[y * dw + x] = s * inv
            }
            return out
        }
        val xt = areaTab(w, dw, scaleX)
        val yt = areaTab(h, dh, scaleY)
        val buf = FloatArray(dw)
        var k = 0
        for (dy in 0 until dh) {
            val sum = FloatArray(dw)
            while (k < yt.di.size && yt.di[k] == dy) {
                java.util.Arrays.fill(buf, 0f)
                val base = yt.si[k] * w
                for (j in xt.di.indices) buf[xt.di[j]] += a[base + xt.si[j]] * xt.alpha[j]
                for (j in 0 until dw) sum[j] += yt.alpha[k] * buf[j]
                k++
            }
            System.arraycopy(sum, 0, out, dy * dw, dw)
        }
        return out
    }

    /** cv2.resize(float32, INTER_LINEAR): half-pixel centres, clamped like OpenCV. */
    private fun linearFloat(a: FloatArray, w: Int, h: Int, dw: Int, dh: Int): FloatArray {
        val scaleX = w.toDouble() / dw
        val scaleY = h.toDouble() / dh
        val xs = IntArray(dw)
        val ax = FloatArray(dw)
        val single = BooleanArray(dw)
        for (dx in 0 until dw) {
            var fx = ((dx + 0.5) * scaleX - 0.5).toFloat()
            var sx = floor(fx.toDouble()).toInt()
            fx -= sx
            if (sx < 0) { fx = 0f; sx = 0 }
            if (sx + 1 >= w) { single[dx] = true; if (sx >= w - 1) { fx = 0f; sx = w - 1 } }
            xs[dx] = sx
            ax[dx] = fx
        }
        val out = FloatArray(dw * dh)
        val r0 = FloatArray(dw)
        val r1 = FloatArray(dw)
        fun hrow(sy: Int, row: FloatArray) {
            val b = sy * w
            for (dx in 0 until dw) {
                val sx = xs[dx]
                row[dx] = if (single[dx]) a[b + sx] else a[b + sx] * (1f - ax[dx]) + a[b + sx + 1] * ax[dx]
            }
        }
        for (dy in 0 until dh) {
            var fy = ((dy + 0.5) * scaleY - 0.5).toFloat()
            val sy = floor(fy.toDouble()).toInt()
            fy -= sy
            hrow(min(max(sy, 0), h - 1), r0)
            hrow(min(max(sy + 1, 0), h - 1), r1)
            val b0 = 1f - fy
            for (dx in 0 until dw) out[dy * dw + dx] = r0[dx] * b0 + r1[dx] * fy
        }
        return out
    }

    /** cv2.medianBlur on 8-bit values (k odd), BORDER_REPLICATE: exact median of each k x k window. */
    internal fun medianBlur(a: IntArray, w: Int, h: Int, k: Int): IntArray {
        val r = k / 2
        val out = IntArray(w * h)
        val half = (k * k) / 2
        for (y in 0 until h) {
            val hist = IntArray(256)
            for (yy in y - r..y + r) {
                val ry = min(max(yy, 0), h - 1)
                for (xx in -r..r) hist[a[ry * w + min(max(xx, 0), w - 1)]]++
            }
            for (x in 0 until w) {
                if (x > 0) {
                    val xo = min(max(x - 1 - r, 0), w - 1)
                    val xn = min(max(x + r, 0), w - 1)
                    for (yy in y - r..y + r) {
                        val ry = min(max(yy, 0), h - 1)
                        hist[a[ry * w + xo]]--
                        hist[a[ry * w + xn]]++
                    }
                }
                var c = 0
                var v = 0
                while (v < 256) { c += hist[v]; if (c > half) break; v++ }
                out[y * w + x] = v
            }
        }
        return out
    }

    /** cv2.dilate with a k x k rectangle; outside the image ignored. */
    private fun dilateRect(a: FloatArray, w: Int, h: Int, k: Int): FloatArray {
        val r = k / 2
        val tmp = FloatArray(w * h)
        for (y in 0 until h) for (x in 0 until w) {
            var m = Float.NEGATIVE_INFINITY
            for (xx in max(0, x - r)..min(w - 1, x + r)) m = max(m, a[y * w + xx])
            tmp[y * w + x] = m
        }
        val out = FloatArray(w * h)
        for (y in 0 until h) for (x in 0 until w) {
            var m = Float.NEGATIVE_INFINITY
            for (yy in max(0, y - r)..min(h - 1, y + r)) m = max(m, tmp[yy * w + x])
            out[y * w + x] = m
        }
        return out
    }

    // ---------------------------------------------------------------------------------------- statistics
    private fun select(a: FloatArray, m: BooleanArray): FloatArray {
        var c = 0
        for (v in m) if (v) c++
        val out = FloatArray(c)
        var j = 0
        for (i in a.indices) if (m[i]) out[j++] = a[i]
        return out
    }

    /** numpy.percentile(method="linear"). */
    private fun percentile(v: FloatArray, q: Double): Float {
        val s = v.copyOf()
        s.sort()
        val pos = q / 100.0 * (s.size - 1)
        val i = floor(pos).toInt()
        val t = pos - i
        val a = s[i].toDouble()
        val b = s[min(i + 1, s.size - 1)].toDouble()
        return (if (t >= 0.5) b - (b - a) * (1 - t) else a + (b - a) * t).toFloat()
    }

    private fun median(v: FloatArray): Float {
        val s = v.copyOf()
        s.sort()
        val n = s.size
        return if (n % 2 == 1) s[n / 2] else (s[n / 2 - 1] + s[n / 2]) / 2f
    }

    /** np.median of uint8 values cast back to uint8 (np.uint8(np.median(...))): truncates .5. */
    private fun medianU8(v: ByteArray, n: Int): Int {
        val hist = IntArray(256)
        for (i in 0 until n) hist[v[i].toInt() and 0xff]++
        fun kth(k: Int): Int {
            var c = 0
            for (x in 0 until 256) { c += hist[x]; if (c > k) return x }
            return 255
        }
        return if (n % 2 == 1) kth(n / 2) else ((kth(n / 2 - 1) + kth(n / 2)) / 2.0).toInt()
    }

    /** (a − median) / max(std, floor) over the pixels in m. */
    private fun zscore(a: FloatArray, m: BooleanArray, floorStd: Double): FloatArray {
        val v = select(a, m)
        val med = median(v).toDouble()
        var sum = 0.0
        for (x in v) sum += x
        val mean = sum / v.size
        var sq = 0.0
        for (x in v) { val t = x - mean; sq += t * t }
        val std = max(sqrt(sq / v.size), floorStd)
        val medF = med.toFloat()
        val stdF = std.toFloat()
        return FloatArray(a.size) { (a[it] - medF) / stdF }
    }

    // --------------------------------------------------------------------------------- candidate tests
    private class SectorGeometry(dd: Double) {
        val r = max(2, pyRound(dd).toInt())
        val size = 2 * r + 1
        val inner = BooleanArray(size * size)
        val ring = BooleanArray(size * size)
        val sector = IntArray(size * size)
        val full = IntArray(N_SECTORS)

        init {
            val inR = max(1.0, 0.4 * dd).toFloat()
            val rIn = (0.6 * dd).toFloat()
            val rOut = dd.toFloat()
            val pi = Math.PI.toFloat()
            val twoPi = (2 * Math.PI).toFloat()
            for (yy in -r..r) for (xx in -r..r) {
                val i = (yy + r) * size + (xx + r)
                val rr = Math.hypot(xx.toDouble(), yy.toDouble()).toFloat()
                inner[i] = rr <= inR
                ring[i] = rr > rIn && rr <= rOut
                val a = atan2(yy.toDouble(), xx.toDouble()).toFloat()
                sector[i] = (((a + pi) / twoPi * N_SECTORS).toInt()) % N_SECTORS
                if (ring[i]) full[sector[i]]++
            }
        }
    }

    private fun roundness(lum: FloatArray, mask: BooleanArray, w: Int, h: Int, x: Int, y: Int, g: SectorGeometry,
                          spread: Double): Double {
        var cIn = 0
        var sIn = 0.0
        val cnt = IntArray(N_SECTORS)
        val tot = DoubleArray(N_SECTORS)
        for (yy in -g.r..g.r) {
            val py = y + yy
            if (py < 0 || py >= h) continue
            for (xx in -g.r..g.r) {
                val px = x + xx
                if (px < 0 || px >= w) continue
                val j = py * w + px
                if (!mask[j]) continue
                val i = (yy + g.r) * g.size + (xx + g.r)
                if (g.inner[i]) { cIn++; sIn += lum[j].toDouble() }
                if (g.ring[i]) {
                    val k = g.sector[i]
                    cnt[k] = cnt[k] + 1
                    tot[k] = tot[k] + lum[j].toDouble()
                }
            }
        }
        if (cIn < 3) return -10.0
        val c = sIn / cIn
        val contrast = ArrayList<Double>()
        for (k in 0 until N_SECTORS) if (cnt[k] >= 0.3 * g.full[k] && cnt[k] > 0) contrast.add((c - tot[k] / cnt[k]) / spread)
        if (contrast.size < 3) return -10.0
        contrast.sort()
        return contrast[1]
    }

    private fun foveaTerm(bright: FloatArray, inside: BooleanArray, w: Int, h: Int, x: Int, y: Int, dd: Double): Double {
        var sum = 0.0
        var n = 0
        for (i in bright.indices) if (inside[i]) { sum += bright[i]; n++ }
        val mean = sum / n
        var sq = 0.0
        for (i in bright.indices) if (inside[i]) { val t = bright[i] - mean; sq += t * t }
        val std = sqrt(sq / n) + 1e-6
        var best = 0.0
        val ylo = max(0, (y - 0.4 * dd).toInt())
        val yhi = min(h, (y + 0.4 * dd).toInt() + 1)
        for (sgn in intArrayOf(-1, 1)) {
            val xa = x + sgn * 2.0 * dd
            val xb = x + sgn * 2.7 * dd
            val xlo = max(0, min(xa, xb).toInt())
            val xhi = min(w, max(xa, xb).toInt() + 1)
            if (xhi <= xlo || yhi <= ylo) continue
            var c = 0
            var mn = Float.POSITIVE_INFINITY
            for (yy in ylo until yhi) for (xx in xlo until xhi) {
                val i = yy * w + xx
                if (inside[i]) { c++; mn = min(mn, bright[i]) }
            }
            if (c < 3) continue
            best = max(best, -mn / std)
        }
        return min(max(best, 0.0), 3.0)
    }
}
