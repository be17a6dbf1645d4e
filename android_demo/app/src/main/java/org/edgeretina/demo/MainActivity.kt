package org.edgeretina.demo

import android.app.Activity
import android.content.Intent
import android.graphics.Color
import android.net.Uri
import android.os.Bundle
import android.provider.MediaStore
import android.provider.OpenableColumns
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.ScrollView
import android.widget.TextView
import androidx.core.content.FileProvider
import org.edgeretina.core.RgbImage
import java.io.File
import java.util.concurrent.Executors

/**
 * The screening demo: open an edgeretina .tflite (or the bundled assets/model.tflite), pick a fundus photo
 * from the gallery or take one with the camera, and see the class, its probability, the decision at the
 * model's recommended threshold and the inference time. Everything model-specific — labels, preprocessing,
 * threshold, output activation, int8 quantisation — comes from the model's embedded metadata.
 */
class MainActivity : Activity() {

    private val worker = Executors.newSingleThreadExecutor()
    private var classifier: LiteRtClassifier? = null
    private var modelFile: File? = null
    private var photo: RgbImage? = null
    private var cameraFile: File? = null

    private lateinit var modelInfo: TextView
    private lateinit var result: TextView
    private lateinit var image: ImageView
    private lateinit var backendGroup: RadioGroup

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        buildUi()
        val fromIntent = intent.getStringExtra("model")
        when {
            fromIntent != null -> loadModel(File(fromIntent))
            assetModel() != null -> loadModel(assetModel()!!)
            else -> modelInfo.text = "No model yet: tap 'Open model' and choose an edgeretina .tflite."
        }
    }

    override fun onDestroy() {
        worker.shutdown()
        classifier?.close()
        super.onDestroy()
    }

    // ------------------------------------------------------------------------------------------- UI
    private fun buildUi() {
        val pad = (16 * resources.displayMetrics.density).toInt()
        val root = LinearLayout(this)
        root.orientation = LinearLayout.VERTICAL
        root.setPadding(pad, pad, pad, pad)

        modelInfo = TextView(this)
        root.addView(modelInfo)

        backendGroup = RadioGroup(this)
        backendGroup.orientation = RadioGroup.HORIZONTAL
        val cpu = RadioButton(this)
        cpu.text = "CPU (XNNPACK, 4 threads)"
        cpu.id = View.generateViewId()
        val gpu = RadioButton(this)
        gpu.text = "GPU delegate"
        gpu.id = View.generateViewId()
        backendGroup.addView(cpu)
        backendGroup.addView(gpu)
        backendGroup.check(cpu.id)
        backendGroup.setOnCheckedChangeListener { _, _ -> modelFile?.let { loadModel(it) } }
        root.addView(backendGroup)

        val buttons = LinearLayout(this)
        buttons.orientation = LinearLayout.HORIZONTAL
        buttons.addView(button("Open model") { pickModel() })
        buttons.addView(button("Gallery") { pickPhoto() })
        buttons.addView(button("Camera") { takePhoto() })
        root.addView(buttons)

        result = TextView(this)
        result.setTextSize(18f)
        result.setPadding(0, pad, 0, pad)
        root.addView(result)

        image = ImageView(this)
        image.adjustViewBounds = true
        root.addView(image)

        val scroll = ScrollView(this)
        scroll.addView(root)
        setContentView(scroll)
    }

    private fun button(label: String, onClick: () -> Unit): Button {
        val b = Button(this)
        b.text = label
        b.setOnClickListener { onClick() }
        return b
    }

    private fun backend(): Backend {
        val checked = backendGroup.findViewById<RadioButton>(backendGroup.checkedRadioButtonId)
        return if (checked != null && checked.text.startsWith("GPU")) Backend.GPU else Backend.CPU
    }

    private fun showError(msg: String) {
        result.setTextColor(Color.rgb(0xb0, 0x00, 0x20))
        result.text = msg
    }

    // ------------------------------------------------------------------------------------- model
    private fun assetModel(): File? {
        val names = assets.list("") ?: return null
        if ("model.tflite" !in names) return null
        val out = File(filesDir, "models/model.tflite")
        if (!out.isFile) {
            out.parentFile?.mkdirs()
            assets.open("model.tflite").use { i -> out.outputStream().use { o -> i.copyTo(o) } }
        }
        return out
    }

    private fun loadModel(file: File) {
        modelFile = file
        val backend = backend()
        modelInfo.text = "Loading ${file.name}…"
        worker.execute {
            val old = classifier
            classifier = null
            old?.close()
            try {
                val c = LiteRtClassifier.open(file, backend, 4)
                classifier = c
                val cfg = c.model.config
                val steps = c.model.pipeline.imageSteps.joinToString(" → ") { it.name } +
                    (if (c.model.pipeline.standardizeEps != null) " → standardize" else "") +
                    " → scale(${c.model.pipeline.scaling})"
                val threshold = cfg.threshold?.let { "%.3f".format(it) } ?: "—"
                runOnUiThread {
                    modelInfo.text = "${file.name}\ntask ${cfg.task} (${cfg.kind}), labels ${cfg.labels.joinToString(", ")}\n" +
                        "input ${c.model.input.shape.joinToString("×")} ${c.model.input.type.dtype}, " +
                        "output ${cfg.outputKind}, threshold $threshold\npreprocessing: $steps\n" +
                        "runs on: ${c.delegateApplied} (loaded in %.0f ms)".format(c.loadMs)
                    photo?.let { classify(it) }
                }
            } catch (e: Exception) {
                runOnUiThread {
                    modelInfo.text = file.name
                    showError("Model refused: ${e.message}")
                }
            }
        }
    }

    private fun pickModel() {
        val i = Intent(Intent.ACTION_OPEN_DOCUMENT)
        i.addCategory(Intent.CATEGORY_OPENABLE)
        i.type = "*/*"
        startActivityForResult(i, REQ_MODEL)
    }

    private fun copyModel(uri: Uri): File {
        var name = "model.tflite"
        contentResolver.query(uri, null, null, null, null)?.use { c ->
            val idx = c.getColumnIndex(OpenableColumns.DISPLAY_NAME)
            if (idx >= 0 && c.moveToFirst()) name = c.getString(idx).replace('/', '_')
        }
        val out = File(filesDir, "models/$name")
        out.parentFile?.mkdirs()
        contentResolver.openInputStream(uri)!!.use { i -> out.outputStream().use { o -> i.copyTo(o) } }
        return out
    }

    // ------------------------------------------------------------------------------------ photos
    private fun pickPhoto() {
        val i = Intent(Intent.ACTION_GET_CONTENT)
        i.type = "image/*"
        startActivityForResult(i, REQ_GALLERY)
    }

    private fun takePhoto() {
        val dir = File(cacheDir, "photos")
        dir.mkdirs()
        val f = File(dir, "fundus.jpg")
        cameraFile = f
        val uri = FileProvider.getUriForFile(this, "$packageName.files", f)
        val i = Intent(MediaStore.ACTION_IMAGE_CAPTURE)
        i.putExtra(MediaStore.EXTRA_OUTPUT, uri)
        i.addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION or Intent.FLAG_GRANT_READ_URI_PERMISSION)
        try {
            startActivityForResult(i, REQ_CAMERA)
        } catch (e: Exception) {
            showError("No camera app on this device.")
        }
    }

    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (resultCode != RESULT_OK) return
        when (requestCode) {
            REQ_MODEL -> data?.data?.let { uri ->
                worker.execute {
                    try {
                        val f = copyModel(uri)
                        runOnUiThread { loadModel(f) }
                    } catch (e: Exception) {
                        runOnUiThread { showError("Cannot read the model: ${e.message}") }
                    }
                }
            }
            REQ_GALLERY -> data?.data?.let { decodeAndClassify(it) }
            REQ_CAMERA -> cameraFile?.let { decodeAndClassify(Uri.fromFile(it)) }
        }
    }

    private fun decodeAndClassify(uri: Uri) {
        result.setTextColor(Color.DKGRAY)
        result.text = "Reading photo…"
        worker.execute {
            try {
                val img = Photos.decode(contentResolver, uri)
                val preview = Photos.preview(img)
                runOnUiThread {
                    photo = img
                    image.setImageBitmap(preview)
                    classify(img)
                }
            } catch (e: Exception) {
                runOnUiThread { showError("Cannot read the photo: ${e.message}") }
            }
        }
    }

    private fun classify(img: RgbImage) {
        worker.execute {
            val c = classifier
            if (c == null) {
                runOnUiThread { showError("Open a model first.") }
                return@execute
            }
            try {
                val r = c.classify(img)
                val p = r.prediction
                val lines = StringBuilder()
                lines.append("Decision: ${p.decision}")
                if (p.threshold != null && c.model.config.isBinary) {
                    lines.append("  (p = %.3f, threshold %.3f)".format(p.score, p.threshold))
                }
                if (p.borderline == true) {
                    lines.append("\nBorderline: within ±%.3g logit of the threshold — retake advised".format(p.borderlineBand))
                }
                lines.append("\nTop class: ${p.topLabel} (%.1f %%)".format(100 * p.probabilities[p.topIndex]))
                for (i in p.labels.indices) lines.append("\n  ${p.labels[i]}: %.3f".format(p.probabilities[i]))
                lines.append("\nInference %.1f ms on %s · preprocessing %.1f ms".format(r.inferenceMs, c.delegateApplied, r.preprocessMs))
                lines.append("\nA screening aid, not a diagnosis.")
                runOnUiThread {
                    result.setTextColor(if (p.positive == true) Color.rgb(0xb0, 0x50, 0x00) else Color.rgb(0x10, 0x60, 0x20))
                    result.text = lines.toString()
                }
            } catch (e: Exception) {
                runOnUiThread { showError("Classification failed: ${e.message}") }
            }
        }
    }

    companion object {
        private const val REQ_MODEL = 1
        private const val REQ_GALLERY = 2
        private const val REQ_CAMERA = 3
    }
}
