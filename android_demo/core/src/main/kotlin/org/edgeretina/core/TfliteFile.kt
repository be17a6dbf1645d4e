package org.edgeretina.core

import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.charset.Charset

/** TFLite tensor element types (schema.fbs `TensorType`), the ones an image classifier's interface uses. */
enum class TensorType(val code: Int, val bytes: Int, val dtype: String) {
    FLOAT32(0, 4, "float32"), FLOAT16(1, 2, "float16"), INT32(2, 4, "int32"), UINT8(3, 1, "uint8"),
    INT64(4, 8, "int64"), STRING(5, 0, "string"), BOOL(6, 1, "bool"), INT16(7, 2, "int16"),
    COMPLEX64(8, 8, "complex64"), INT8(9, 1, "int8"), FLOAT64(10, 8, "float64"), OTHER(-1, 0, "other");

    val isQuantizedInteger: Boolean get() = this == UINT8 || this == INT8 || this == INT16

    companion object {
        fun of(code: Int): TensorType {
            for (t in values()) if (t.code == code) return t
            return OTHER
        }
    }
}

/** One interface tensor: name, element type, shape and (per-tensor) affine quantisation. */
data class TensorInfo(
    val name: String,
    val type: TensorType,
    val shape: IntArray,
    val scale: Float,
    val zeroPoint: Int
) {
    val isQuantized: Boolean get() = type.isQuantizedInteger && scale != 0f

    fun toMap(): Map<String, Any?> = linkedMapOf(
        "name" to name, "dtype" to type.dtype, "shape" to shape.toList(),
        "scale" to scale.toDouble(), "zero_point" to zeroPoint
    )

    override fun equals(other: Any?): Boolean =
        other is TensorInfo && other.name == name && other.type == type && other.shape.contentEquals(shape) &&
            other.scale == scale && other.zeroPoint == zeroPoint

    override fun hashCode(): Int = name.hashCode() * 31 + shape.contentHashCode()
}

/**
 * A minimal, read-only view of a `.tflite` flatbuffer (schema.fbs, identifier "TFL3"): the interface tensors
 * of subgraph 0 and the named metadata entries. It reads only what the app needs and never copies weights.
 *
 * Both buffer layouts are handled: data inline in the flatbuffer, and data appended after it
 * (`Buffer.offset`/`size`, used by the converter for models over 2 GB).
 */
class TfliteFile private constructor(private val bb: ByteBuffer, val source: String) {

    val inputs: List<TensorInfo>
    val outputs: List<TensorInfo>
    val version: Long
    private val metadataBuffers: Map<String, Int>

    init {
        if (bb.capacity() < 8) throw CoreException("$source: not a TFLite model (file too short)")
        val ident = String(byteArrayOf(bb.get(4), bb.get(5), bb.get(6), bb.get(7)), Charset.forName("US-ASCII"))
        if (ident != "TFL3") throw CoreException("$source: not a TFLite model (identifier '$ident', expected TFL3)")
        try {
            val model = uoffset(0)
            version = if (hasField(model, 0)) (bb.getInt(fieldPos(model, 0)).toLong() and 0xffffffffL) else 0L
            val subgraphs = vectorOrNull(model, 2) ?: throw CoreException("$source: model has no subgraphs")
            if (vecLen(subgraphs) < 1) throw CoreException("$source: model has no subgraphs")
            val sg = vecTable(subgraphs, 0)
            val tensors = vectorOrNull(sg, 0) ?: throw CoreException("$source: subgraph 0 has no tensors")
            inputs = intVector(sg, 1).map { readTensor(vecTable(tensors, it)) }
            outputs = intVector(sg, 2).map { readTensor(vecTable(tensors, it)) }
            val md = LinkedHashMap<String, Int>()
            val mdVec = vectorOrNull(model, 6)
            if (mdVec != null) {
                for (k in 0 until vecLen(mdVec)) {
                    val entry = vecTable(mdVec, k)
                    val name = stringOrNull(entry, 0) ?: continue
                    val buf = if (hasField(entry, 1)) bb.getInt(fieldPos(entry, 1)) else continue
                    md[name] = buf
                }
            }
            metadataBuffers = md
        } catch (e: IndexOutOfBoundsException) {
            throw CoreException("$source: truncated or corrupt TFLite flatbuffer")
        } catch (e: IllegalArgumentException) {
            throw CoreException("$source: truncated or corrupt TFLite flatbuffer")
        }
    }

    /** Names of the model's metadata entries (e.g. "min_runtime_version", "edgeretina"). */
    val metadataNames: Set<String> get() = metadataBuffers.keys

    /** The raw bytes of the metadata entry [name], or null when the model has none of that name. */
    fun metadata(name: String): ByteArray? {
        val index = metadataBuffers[name] ?: return null
        val model = uoffset(0)
        val buffers = vectorOrNull(model, 4) ?: throw CoreException("$source: metadata '$name' points at no buffer")
        if (index < 0 || index >= vecLen(buffers)) throw CoreException("$source: metadata '$name' points at buffer $index, which does not exist")
        val buf = vecTable(buffers, index)
        val data = vectorOrNull(buf, 0)
        if (data != null && vecLen(data) > 0) {
            val out = ByteArray(vecLen(data))
            for (k in out.indices) out[k] = bb.get(data + 4 + k)
            return out
        }
        // Large-model layout: offset/size (uint64) into the file, after the flatbuffer.
        val off = if (hasField(buf, 1)) bb.getLong(fieldPos(buf, 1)) else 0L
        val size = if (hasField(buf, 2)) bb.getLong(fieldPos(buf, 2)) else 0L
        if (off > 1 && size > 0 && off + size <= bb.capacity()) {
            val out = ByteArray(size.toInt())
            for (k in out.indices) out[k] = bb.get(off.toInt() + k)
            return out
        }
        return ByteArray(0)
    }

    /** The metadata entry [name] decoded as UTF-8 text, or null. */
    fun metadataText(name: String): String? = metadata(name)?.let { String(it, Charsets.UTF_8) }

    // --- flatbuffer primitives -----------------------------------------------------------------------
    private fun uoffset(pos: Int): Int = pos + bb.getInt(pos)

    private fun vtable(table: Int): Int = table - bb.getInt(table)

    private fun hasField(table: Int, field: Int): Boolean {
        val vt = vtable(table)
        val vtSize = bb.getShort(vt).toInt() and 0xffff
        val slot = 4 + 2 * field
        if (slot + 2 > vtSize) return false
        return (bb.getShort(vt + slot).toInt() and 0xffff) != 0
    }

    private fun fieldPos(table: Int, field: Int): Int {
        val vt = vtable(table)
        return table + (bb.getShort(vt + 4 + 2 * field).toInt() and 0xffff)
    }

    private fun vectorOrNull(table: Int, field: Int): Int? =
        if (hasField(table, field)) uoffset(fieldPos(table, field)) else null

    private fun vecLen(vec: Int): Int = bb.getInt(vec)

    private fun vecTable(vec: Int, index: Int): Int {
        if (index < 0 || index >= vecLen(vec)) throw IndexOutOfBoundsException("vector index $index")
        return uoffset(vec + 4 + 4 * index)
    }

    private fun intVector(table: Int, field: Int): List<Int> {
        val v = vectorOrNull(table, field) ?: return emptyList()
        val out = ArrayList<Int>()
        for (k in 0 until vecLen(v)) out.add(bb.getInt(v + 4 + 4 * k))
        return out
    }

    private fun stringOrNull(table: Int, field: Int): String? {
        val v = vectorOrNull(table, field) ?: return null
        val n = vecLen(v)
        val bytes = ByteArray(n)
        for (k in 0 until n) bytes[k] = bb.get(v + 4 + k)
        return String(bytes, Charsets.UTF_8)
    }

    private fun readTensor(t: Int): TensorInfo {
        // Tensor: shape(0) type(1) buffer(2) name(3) quantization(4)
        val shape = intVector(t, 0).toIntArray()
        val type = TensorType.of(if (hasField(t, 1)) bb.get(fieldPos(t, 1)).toInt() else 0)
        val name = stringOrNull(t, 3) ?: ""
        var scale = 0f
        var zp = 0
        val q = vectorOrNull(t, 4)
        if (q != null) {
            // QuantizationParameters: min(0) max(1) scale(2, [float]) zero_point(3, [long])
            val sv = vectorOrNull(q, 2)
            if (sv != null && vecLen(sv) > 0) scale = bb.getFloat(sv + 4)
            val zv = vectorOrNull(q, 3)
            if (zv != null && vecLen(zv) > 0) zp = bb.getLong(zv + 4).toInt()
        }
        return TensorInfo(name, type, shape, scale, zp)
    }

    companion object {
        fun read(bytes: ByteArray, source: String = "model.tflite"): TfliteFile =
            TfliteFile(ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN), source)

        /** [buffer] may be a memory-mapped file (Android: FileChannel.map / AssetFileDescriptor). */
        fun read(buffer: ByteBuffer, source: String = "model.tflite"): TfliteFile =
            TfliteFile(buffer.duplicate().order(ByteOrder.LITTLE_ENDIAN), source)

        fun read(file: java.io.File): TfliteFile {
            if (!file.isFile) throw CoreException("${file.path}: no such model file")
            return read(file.readBytes(), file.path)
        }
    }
}
