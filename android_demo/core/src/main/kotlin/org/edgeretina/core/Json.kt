package org.edgeretina.core

/**
 * A small, strict JSON reader and writer (no dependencies, so the core module runs on any JVM and on Android
 * without org.json).
 *
 * Values map to: object -> LinkedHashMap<String, Any?> (key order kept), array -> List<Any?>,
 * string -> String, integer -> Long, other number -> Double, true/false -> Boolean, null -> null.
 * The code sticks to Kotlin 1.3 language features so that Debian's kotlinc and a current Android Gradle
 * toolchain both compile it.
 */
object Json {

    fun parse(text: String, source: String = "json"): Any? {
        val p = Parser(text, source)
        p.skipWs()
        val v = p.value()
        p.skipWs()
        if (!p.atEnd()) throw p.error("unexpected trailing characters")
        return v
    }

    fun parseObject(text: String, source: String = "json"): Map<String, Any?> {
        val v = parse(text, source)
        if (v !is Map<*, *>) throw CoreException("$source: expected a JSON object")
        @Suppress("UNCHECKED_CAST")
        return v as Map<String, Any?>
    }

    /** Serialise maps, lists, strings, numbers, booleans and null. [indent] > 0 pretty-prints. */
    fun write(value: Any?, indent: Int = 0): String {
        val sb = StringBuilder()
        writeValue(sb, value, indent, 0)
        return sb.toString()
    }

    private fun writeValue(sb: StringBuilder, v: Any?, indent: Int, level: Int) {
        when (v) {
            null -> sb.append("null")
            is String -> writeString(sb, v)
            is Boolean -> sb.append(if (v) "true" else "false")
            is Double -> writeDouble(sb, v)
            is Float -> writeDouble(sb, v.toDouble())
            is Number -> sb.append(v.toLong().toString())
            is Map<*, *> -> {
                if (v.isEmpty()) { sb.append("{}"); return }
                sb.append('{')
                var first = true
                for ((k, item) in v) {
                    if (!first) sb.append(',')
                    first = false
                    newline(sb, indent, level + 1)
                    writeString(sb, k.toString())
                    sb.append(if (indent > 0) ": " else ":")
                    writeValue(sb, item, indent, level + 1)
                }
                newline(sb, indent, level)
                sb.append('}')
            }
            is Iterable<*> -> {
                val items = v.toList()
                if (items.isEmpty()) { sb.append("[]"); return }
                sb.append('[')
                for (i in items.indices) {
                    if (i > 0) sb.append(if (indent > 0) ", " else ",")
                    writeValue(sb, items[i], indent, level + 1)
                }
                sb.append(']')
            }
            is DoubleArray -> writeValue(sb, v.toList(), indent, level)
            is FloatArray -> writeValue(sb, v.toList(), indent, level)
            is IntArray -> writeValue(sb, v.toList(), indent, level)
            is LongArray -> writeValue(sb, v.toList(), indent, level)
            is Array<*> -> writeValue(sb, v.toList(), indent, level)
            else -> writeString(sb, v.toString())
        }
    }

    private fun newline(sb: StringBuilder, indent: Int, level: Int) {
        if (indent <= 0) return
        sb.append('\n')
        for (i in 0 until indent * level) sb.append(' ')
    }

    private fun writeDouble(sb: StringBuilder, d: Double) {
        if (d.isNaN() || d.isInfinite()) { sb.append("null"); return }
        // Shortest round-trip representation (Java's Double.toString), written the way Python's json does
        // for the common cases: integral values keep ".0", exponents use "e".
        var s = d.toString()
        if (s.contains('E')) {
            val mant = s.substring(0, s.indexOf('E'))
            var exp = s.substring(s.indexOf('E') + 1)
            val sign = if (exp.startsWith("-")) "-" else "+"
            if (exp.startsWith("-")) exp = exp.substring(1)
            if (exp.length < 2) exp = "0$exp"
            val m = if (mant.endsWith(".0")) mant.substring(0, mant.length - 2) else mant
            s = m + "e" + sign + exp
        }
        sb.append(s)
    }

    private const val HEX = "0123456789abcdef"

    private fun writeString(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when (c) {
                '"' -> sb.append("\\\"")
                '\\' -> sb.append("\\\\")
                '\n' -> sb.append("\\n")
                '\r' -> sb.append("\\r")
                '\t' -> sb.append("\\t")
                '\b' -> sb.append("\\b")
                '\u000C' -> sb.append("\\f")
                else -> if (c < ' ') {
                    val code = c - '\u0000'
                    sb.append("\\u00").append(HEX[code shr 4]).append(HEX[code and 15])
                } else {
                    sb.append(c)
                }
            }
        }
        sb.append('"')
    }

    private class Parser(val s: String, val source: String) {
        var i = 0

        fun atEnd() = i >= s.length

        fun error(msg: String) = CoreException("$source: invalid JSON at character $i ($msg)")

        fun skipWs() {
            while (i < s.length && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++
        }

        fun value(): Any? {
            if (atEnd()) throw error("unexpected end")
            val c = s[i]
            return when {
                c == '{' -> obj()
                c == '[' -> arr()
                c == '"' -> str()
                c == 't' -> literal("true", true)
                c == 'f' -> literal("false", false)
                c == 'n' -> literal("null", null)
                c == 'N' -> literal("NaN", Double.NaN)
                c == 'I' -> literal("Infinity", Double.POSITIVE_INFINITY)
                c == '-' || (c in '0'..'9') -> num()
                else -> throw error("unexpected '$c'")
            }
        }

        fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, i)) throw error("expected $word")
            i += word.length
            return v
        }

        fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            i++
            skipWs()
            if (i < s.length && s[i] == '}') { i++; return out }
            while (true) {
                skipWs()
                if (atEnd() || s[i] != '"') throw error("expected a string key")
                val k = str()
                skipWs()
                if (atEnd() || s[i] != ':') throw error("expected ':'")
                i++
                skipWs()
                out[k] = value()
                skipWs()
                if (atEnd()) throw error("unterminated object")
                if (s[i] == ',') { i++; continue }
                if (s[i] == '}') { i++; return out }
                throw error("expected ',' or '}'")
            }
        }

        fun arr(): List<Any?> {
            val out = ArrayList<Any?>()
            i++
            skipWs()
            if (i < s.length && s[i] == ']') { i++; return out }
            while (true) {
                skipWs()
                out.add(value())
                skipWs()
                if (atEnd()) throw error("unterminated array")
                if (s[i] == ',') { i++; continue }
                if (s[i] == ']') { i++; return out }
                throw error("expected ',' or ']'")
            }
        }

        fun str(): String {
            val sb = StringBuilder()
            i++
            while (true) {
                if (atEnd()) throw error("unterminated string")
                val c = s[i++]
                if (c == '"') return sb.toString()
                if (c != '\\') { sb.append(c); continue }
                if (atEnd()) throw error("unterminated escape")
                val e = s[i++]
                when (e) {
                    '"' -> sb.append('"')
                    '\\' -> sb.append('\\')
                    '/' -> sb.append('/')
                    'b' -> sb.append('\b')
                    'f' -> sb.append('\u000C')
                    'n' -> sb.append('\n')
                    'r' -> sb.append('\r')
                    't' -> sb.append('\t')
                    'u' -> {
                        if (i + 4 > s.length) throw error("short \\u escape")
                        val code = try {
                            Integer.parseInt(s.substring(i, i + 4), 16)
                        } catch (ex: NumberFormatException) {
                            throw error("bad \\u escape")
                        }
                        sb.append(code.toChar())
                        i += 4
                    }
                    else -> throw error("bad escape '\\$e'")
                }
            }
        }

        fun num(): Any {
            val start = i
            if (s[i] == '-') {
                i++
                if (s.startsWith("Infinity", i)) { i += 8; return Double.NEGATIVE_INFINITY }
            }
            var isDouble = false
            while (i < s.length) {
                val c = s[i]
                if (c in '0'..'9') { i++; continue }
                if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') { isDouble = true; i++; continue }
                break
            }
            val t = s.substring(start, i)
            try {
                if (!isDouble) {
                    return try { t.toLong() } catch (ex: NumberFormatException) { t.toDouble() }
                }
                return t.toDouble()
            } catch (ex: NumberFormatException) {
                throw error("bad number '$t'")
            }
        }
    }
}

/** Typed accessors over parsed JSON objects, with one-line errors that name where the value came from. */
internal class JsonObj(val map: Map<String, Any?>, val where: String) {

    fun has(key: String) = map.containsKey(key) && map[key] != null

    fun string(key: String): String {
        val v = map[key] ?: throw CoreException("$where: missing '$key'")
        return v as? String ?: throw CoreException("$where: '$key' must be a string")
    }

    fun stringOr(key: String, default: String?): String? {
        val v = map[key] ?: return default
        return v as? String ?: throw CoreException("$where: '$key' must be a string")
    }

    fun double(key: String): Double {
        val v = map[key] ?: throw CoreException("$where: missing '$key'")
        return (v as? Number)?.toDouble() ?: throw CoreException("$where: '$key' must be a number")
    }

    fun doubleOr(key: String, default: Double?): Double? {
        val v = map[key] ?: return default
        return (v as? Number)?.toDouble() ?: throw CoreException("$where: '$key' must be a number")
    }

    fun intOr(key: String, default: Int?): Int? {
        val v = map[key] ?: return default
        if (v is Long) return v.toInt()
        if (v is Double && v == Math.floor(v)) return v.toInt()
        throw CoreException("$where: '$key' must be an integer")
    }

    fun boolOr(key: String, default: Boolean): Boolean {
        val v = map[key] ?: return default
        return v as? Boolean ?: throw CoreException("$where: '$key' must be true or false")
    }

    fun obj(key: String): JsonObj {
        val v = map[key] ?: throw CoreException("$where: missing '$key'")
        if (v !is Map<*, *>) throw CoreException("$where: '$key' must be an object")
        @Suppress("UNCHECKED_CAST")
        return JsonObj(v as Map<String, Any?>, "$where.$key")
    }

    fun objOrNull(key: String): JsonObj? = if (has(key)) obj(key) else null

    fun list(key: String): List<Any?> {
        val v = map[key] ?: throw CoreException("$where: missing '$key'")
        return v as? List<Any?> ?: throw CoreException("$where: '$key' must be a list")
    }

    fun doubles(key: String): DoubleArray? {
        val v = map[key] ?: return null
        if (v is Number) return doubleArrayOf(v.toDouble())
        val l = v as? List<*> ?: throw CoreException("$where: '$key' must be a number or a list of numbers")
        val out = DoubleArray(l.size)
        for (k in l.indices) {
            out[k] = (l[k] as? Number)?.toDouble()
                ?: throw CoreException("$where: '$key' must hold numbers only")
        }
        return out
    }
}

/** Every user-facing problem in the core module: a one-line message naming the file and the problem. */
open class CoreException(message: String) : RuntimeException(message)

/** The model asks for a preprocessing step (or option) this app does not implement: refuse, never guess. */
class UnsupportedStepException(message: String) : CoreException(message)
