package org.edgeretina.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.media.ExifInterface
import android.net.Uri
import org.edgeretina.core.RgbImage

/**
 * Decode a photo to RGB pixels the way the Python side does (cv2.IMREAD_COLOR): full resolution,
 * EXIF orientation applied, alpha dropped. JPEG decoders may differ by a level or two in a few pixels
 * (libjpeg-turbo build and IDCT options); the parity test therefore feeds both sides the same decoded pixels.
 */
object Photos {
    fun decode(resolver: ContentResolver, uri: Uri): RgbImage {
        val opts = BitmapFactory.Options()
        opts.inPreferredConfig = Bitmap.Config.ARGB_8888
        opts.inScaled = false
        val decoded = resolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, opts) }
            ?: throw IllegalArgumentException("$uri: not an image Android can decode")
        val bitmap = rotate(decoded, orientation(resolver, uri))
        return toRgb(bitmap)
    }

    fun toRgb(bitmap: Bitmap): RgbImage {
        val w = bitmap.width
        val h = bitmap.height
        val argb = IntArray(w * h)
        bitmap.getPixels(argb, 0, w, 0, 0, w, h)
        return RgbImage.fromArgb(w, h, argb)
    }

    /** A display-sized copy for the ImageView (the model always gets the full-resolution pixels). */
    fun preview(img: RgbImage, maxSide: Int = 1024): Bitmap {
        val argb = IntArray(img.width * img.height)
        for (i in argb.indices) {
            val r = img.data[3 * i].toInt() and 0xff
            val g = img.data[3 * i + 1].toInt() and 0xff
            val b = img.data[3 * i + 2].toInt() and 0xff
            argb[i] = (0xff shl 24) or (r shl 16) or (g shl 8) or b
        }
        val full = Bitmap.createBitmap(argb, img.width, img.height, Bitmap.Config.ARGB_8888)
        val s = maxSide.toFloat() / maxOf(img.width, img.height)
        if (s >= 1f) return full
        return Bitmap.createScaledBitmap(full, (img.width * s).toInt().coerceAtLeast(1),
            (img.height * s).toInt().coerceAtLeast(1), true)
    }

    private fun orientation(resolver: ContentResolver, uri: Uri): Int = try {
        resolver.openInputStream(uri).use { s ->
            if (s == null) ExifInterface.ORIENTATION_NORMAL
            else ExifInterface(s).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
        }
    } catch (e: Exception) {
        ExifInterface.ORIENTATION_NORMAL
    }

    private fun rotate(b: Bitmap, orientation: Int): Bitmap {
        val m = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_ROTATE_90 -> m.postRotate(90f)
            ExifInterface.ORIENTATION_ROTATE_180 -> m.postRotate(180f)
            ExifInterface.ORIENTATION_ROTATE_270 -> m.postRotate(270f)
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> m.postScale(-1f, 1f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> m.postScale(1f, -1f)
            ExifInterface.ORIENTATION_TRANSPOSE -> { m.postRotate(90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_TRANSVERSE -> { m.postRotate(270f); m.postScale(-1f, 1f) }
            else -> return b
        }
        return Bitmap.createBitmap(b, 0, 0, b.width, b.height, m, true)
    }
}
