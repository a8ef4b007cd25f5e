// The upload portal: each dropped or chosen file is sent in its own request, so one bad
// file never holds up the others; the server answers with the file's row, which polls
// itself (htmx) until the document settles.
(function () {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function rows() { return document.getElementById("document-rows"); }

  function upload(files) {
    const collection = document.getElementById("collection").value;
    const labels = document.getElementById("labels").value;
    const empty = document.getElementById("no-documents");
    if (empty) empty.remove();
    for (const file of files) {
      const row = document.createElement("tr");
      row.className = "pending";
      const name = document.createElement("td");
      name.textContent = file.name;
      const state = document.createElement("td");
      state.colSpan = 5;
      state.textContent = "uploading…";
      row.append(name, state);
      rows().prepend(row);
      const body = new FormData();
      body.append("collection", collection);
      body.append("labels", labels);
      body.append("files", file, file.name);
      fetch("/documents/upload", { method: "POST", body, headers: { "X-CSRF-Token": csrf } })
        .then((response) => response.text().then((html) => ({ response, html })))
        .then(({ response, html }) => {
          if (html.trim().startsWith("<tr")) {
            row.outerHTML = html;
            htmx.process(rows());
          } else {
            state.textContent = `upload failed (${response.status})`;
            try {
              state.textContent += `: ${JSON.parse(html).error.message}`;
            } catch {}
          }
        })
        .catch((err) => { state.textContent = `upload failed: ${err}`; });
    }
  }

  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    upload(e.dataTransfer.files);
  });
  input.addEventListener("change", () => { upload(input.files); input.value = ""; });
})();
