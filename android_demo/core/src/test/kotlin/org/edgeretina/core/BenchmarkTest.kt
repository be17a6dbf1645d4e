package org.edgeretina.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class BenchmarkTest {
    @Test
    fun percentilesAreNumpyLinear() {
        // numpy.percentile([1, 2, 3, 4], [50, 90]) == [2.5, 3.7]
        val s = LatencyStats.of(doubleArrayOf(4.0, 1.0, 3.0, 2.0))
        assertEquals(2.5, s.p50, 1e-12)
        assertEquals(3.7, s.p90, 1e-12)
        assertEquals(2.5, s.mean, 1e-12)
        assertEquals(4, s.n)
        assertEquals(7.0, LatencyStats.of(doubleArrayOf(7.0)).p90, 0.0)
    }

    @Test
    fun requestValidation() {
        val r = BenchmarkRequest.of("/data/local/tmp/m.tflite", null, null, null, null, null)
        assertEquals(BenchmarkRequest.DEFAULT_RUNS, r.runs)
        assertEquals("cpu", r.delegate)
        for (bad in listOf(
            { BenchmarkRequest.of(null, 5, 1, 1, "cpu", "a") },
            { BenchmarkRequest.of("m", 0, 1, 1, "cpu", "a") },
            { BenchmarkRequest.of("m", 5, 1, 1, "npu", "a") },
            { BenchmarkRequest.of("m", 5, 1, 1, "gpu", "../../etc") }
        )) {
            try {
                bad()
                fail("accepted")
            } catch (e: CoreException) {
                assertTrue(e.message!!.startsWith("benchmark: "))
            }
        }
    }

    @Test
    fun resultJsonCarriesStatsAndDeviceFacts() {
        val req = BenchmarkRequest.of("m.tflite", 3, 1, 2, "gpu", "r1")
        val dev = DeviceInfo("Samsung", "SM-S911B", "dm1q", "SM8550", "14", 34, "arm64-v8a")
        val res = BenchmarkResult(req, dev, doubleArrayOf(3.0, 1.0, 2.0), "gpu", null, null, 10, null, 5.0, "LiteRT", "0.1.0", "t")
        val m = Json.parseObject(res.toJson())
        assertEquals("edgeretina.android-bench/1", m["schema"])
        assertEquals("ok", m["status"])
        assertEquals(2.0, m["p50_ms"])
        assertEquals("SM8550", (m["device"] as Map<*, *>)["soc"])
        assertTrue(res.logLine().startsWith("EDGERETINA_BENCH {"))
        val failed = BenchmarkResult(req, dev, DoubleArray(0), "none", null, null, 10, null, null, "LiteRT", "0.1.0", "t",
            error = "GPU delegate not supported on this device")
        val f = Json.parseObject(failed.toJson())
        assertEquals("error", f["status"])
        assertEquals(null, f["p50_ms"])
    }

    private fun npy(dir: java.io.File, header: String, values: FloatArray): java.io.File {
        var h = header
        while ((10 + h.length + 1) % 64 != 0) h += " "
        h += "\n"
        val bb = java.nio.ByteBuffer.allocate(10 + h.length + values.size * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN)
        bb.put(0x93.toByte()).put("NUMPY".toByteArray()).put(1.toByte()).put(0.toByte()).putShort(h.length.toShort())
        bb.put(h.toByteArray())
        for (v in values) bb.putFloat(v)
        val f = java.io.File.createTempFile("inputs", ".npy", dir)
        f.writeBytes(bb.array())
        return f
    }

    @Test
    fun npyInputsAreReadOneImageAtATimeAndScored() {
        val dir = createTempDir()
        try {
            val vals = FloatArray(3 * 2 * 2 * 3) { it.toFloat() }
            val f = npy(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 2, 3), }", vals)
            NpyFloats.open(f).use { n ->
                assertEquals(listOf(3, 2, 2, 3), n.shape)
                assertEquals(12, n.itemSize)
                assertEquals(12f, n.read(1)[0], 0f)
                assertEquals(35f, n.read(2)[11], 0f)
            }
            val bad = listOf(
                npy(dir, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }", FloatArray(4)),
                npy(dir, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", FloatArray(4)),
                npy(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (9, 2), }", FloatArray(4))
            )
            for (b in bad) {
                try {
                    NpyFloats.open(b)
                    fail("accepted ${b.name}")
                } catch (e: CoreException) {
                    assertTrue(e.message!!, e.message!!.contains(b.path))
                }
            }
            try {
                BenchmarkRequest.of("m.tflite", 1, 0, 1, "cpu", "r", "inputs.bin")
                fail("accepted a non-.npy inputs file")
            } catch (e: CoreException) {
                assertTrue(e.message!!.contains(".npy"))
            }
        } finally {
            dir.deleteRecursively()
        }
    }
}
