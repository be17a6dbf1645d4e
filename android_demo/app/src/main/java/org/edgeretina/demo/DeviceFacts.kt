package org.edgeretina.demo

import android.os.Build
import org.edgeretina.core.DeviceInfo

/** Phone facts for the benchmark JSON (android.os.Build). */
object DeviceFacts {
    fun read(): DeviceInfo {
        val soc = if (Build.VERSION.SDK_INT >= 31) {
            listOf(Build.SOC_MANUFACTURER, Build.SOC_MODEL).filter { it.isNotBlank() && it != Build.UNKNOWN }
                .joinToString(" ").ifEmpty { Build.HARDWARE }
        } else {
            Build.HARDWARE  // before Android 12 only the board/hardware name is exposed
        }
        return DeviceInfo(
            manufacturer = Build.MANUFACTURER,
            model = Build.MODEL,
            device = Build.DEVICE,
            soc = soc,
            androidVersion = Build.VERSION.RELEASE,
            sdkInt = Build.VERSION.SDK_INT,
            abi = Build.SUPPORTED_ABIS.firstOrNull() ?: ""
        )
    }
}
