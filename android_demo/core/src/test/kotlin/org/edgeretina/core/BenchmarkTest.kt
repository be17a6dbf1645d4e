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
}
