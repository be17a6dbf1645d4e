package org.edgeretina.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class JsonTest {
    @Test
    fun parsesWhatPythonJsonWrites() {
        val v = Json.parseObject("""{"a": [1, 2.5, -3e-05, true, null], "b": {"c": "x\"\u00e9\n"}, "d": 1e+20}""")
        val a = v["a"] as List<*>
        assertEquals(1L, a[0])
        assertEquals(2.5, a[1])
        assertEquals(-3e-05, a[2])
        assertEquals(true, a[3])
        assertEquals(null, a[4])
        assertEquals("x\"é\n", (v["b"] as Map<*, *>)["c"])
        assertEquals(1e20, v["d"])
    }

    @Test
    fun roundTripsAndKeepsKeyOrder() {
        val m = linkedMapOf<String, Any?>("z" to 1, "a" to listOf(0.1, 1.0, 1e-7), "s" to "tab\there", "n" to null)
        val text = Json.write(m)
        assertEquals("""{"z":1,"a":[0.1,1.0,1e-07],"s":"tab\there","n":null}""", text)
        assertEquals(text, Json.write(Json.parse(text)))
        assertEquals(Json.write(m), Json.write(Json.parse(Json.write(m, indent = 2))))
    }

    @Test
    fun rejectsBrokenJsonWithOneLineMessage() {
        for (bad in listOf("{", "{\"a\" 1}", "[1,]x", "\"abc", "{\"a\":tru}")) {
            try {
                Json.parse(bad, "model.tflite metadata")
                fail("accepted $bad")
            } catch (e: CoreException) {
                assertTrue(e.message!!, e.message!!.startsWith("model.tflite metadata: invalid JSON"))
                assertTrue(!e.message!!.contains("\n"))
            }
        }
    }
}
