// The chat page: a question is POSTed and the answer streams back as server-sent events
// (retrieval, token, done, error). Tokens are added as text, never as HTML; the final
// answer arrives rendered (and escaped) by the server, with its citation buttons.
(function () {
  const form = document.getElementById("ask");
  const messages = document.getElementById("messages");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let controller = null;
  const DRAFT = "groundwork-draft";

  // A question typed before an expired session sent us to sign in comes back.
  const draft = sessionStorage.getItem(DRAFT);
  if (draft) {
    form.question.value = draft;
    sessionStorage.removeItem(DRAFT);
  }
  form.question.addEventListener("input", () => sessionStorage.setItem(DRAFT, form.question.value));

  // ", p. 3", or ", pp. 3–4" for a passage that crosses a page break
  const pages = (p) =>
    !p.page ? "" : p.page_end && p.page_end !== p.page ? `, pp. ${p.page}–${p.page_end}` : `, p. ${p.page}`;

  function passagesList(turn, messageId, passages) {
    const sources = turn.querySelector(".sources");
    const list = sources.querySelector("ol");
    list.replaceChildren();
    for (const p of passages) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      button.setAttribute("hx-get", `/chat/messages/${messageId}/passages/${p.n}`);
      button.setAttribute("hx-target", "#side");
      button.textContent = `[${p.n}] ${p.title || p.document}` + pages(p) + (p.url ? ` · ${p.url}` : "");
      item.append(button);
      list.append(item);
    }
    sources.hidden = passages.length === 0;
    if (passages.length) sources.open = true;
    htmx.process(sources);
  }

  function handle(turn, kind, data) {
    const assistant = turn.querySelector(".assistant");
    const answer = assistant.querySelector(".answer");
    const status = assistant.querySelector(".status");
    if (kind === "retrieval") {
      form.dataset.conversation = data.conversation_id;
      assistant.dataset.message = data.message_id;
      history.replaceState(null, "", `/?c=${data.conversation_id}`);
      const filtered = describeFilters(data.filters || {});
      if (data.query || filtered) {
        const query = assistant.querySelector(".query");
        query.textContent = [data.query && `searched for: ${data.query}`, filtered && `filtered by ${filtered}`]
          .filter(Boolean)
          .join(" · ");
        query.hidden = false;
      }
      passagesList(turn, data.message_id, data.passages);
      status.textContent = "answering…";
    } else if (kind === "token") {
      answer.append(document.createTextNode(data.text));
    } else if (kind === "done") {
      answer.innerHTML = data.html;  // rendered and escaped by the server
      htmx.process(answer);
      status.textContent = data.abstained ? "" : `${Math.round(data.timings.total_ms)} ms`;
      assistant.classList.remove("streaming");
      assistant.dataset.status = "done";
    } else if (kind === "error") {
      const error = document.createElement("div");
      error.className = "error";
      error.textContent = data.message;
      answer.after(error);
      status.textContent = "";
      assistant.classList.remove("streaming");
      assistant.dataset.status = "error";
    }
  }

  async function ask(question) {
    const turn = document.getElementById("turn-template").content.firstElementChild.cloneNode(true);
    turn.querySelector(".user").textContent = question;
    messages.append(turn);
    const body = new FormData(form);
    body.set("question", question);
    if (form.dataset.conversation) body.set("conversation_id", form.dataset.conversation);
    controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    try {
      const response = await fetch("/chat/ask", {
        method: "POST",
        body,
        headers: { "X-CSRF-Token": csrf, Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (response.status === 401) {
        // Signed out (the session expired): keep the question, sign in, come back to it.
        sessionStorage.setItem(DRAFT, question);
        location.href = `/signin?next=${encodeURIComponent(location.pathname + location.search)}`;
        return;
      }
      if (!response.ok) {
        handle(turn, "error", { message: await errorMessage(response) });
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const kind = /^event: (.*)$/m.exec(frame)?.[1];
          const data = /^data: (.*)$/m.exec(frame)?.[1];
          if (kind && data) handle(turn, kind, JSON.parse(data));
        }
      }
    } catch (err) {
      const assistant = turn.querySelector(".assistant");
      assistant.querySelector(".status").textContent =
        err.name === "AbortError" ? "stopped" : `failed: ${err.message}`;
      assistant.classList.remove("streaming");
      assistant.dataset.status = err.name === "AbortError" ? "stopped" : "error";
    } finally {
      controller = null;
      send.disabled = false;
      stop.hidden = true;
    }
  }

  async function errorMessage(response) {
    try {
      return (await response.json()).error.message;
    } catch {
      return `request failed (${response.status})`;
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const question = form.question.value.trim();
    if (!question || controller) return;
    form.question.value = "";
    sessionStorage.removeItem(DRAFT);
    ask(question);
  });
  form.question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => controller && controller.abort());

  // Filters: the fields under "Filters", shown above them as chips; a chip's × clears its
  // field (or takes its label out of the labels field).
  const chips = document.getElementById("filter-chips");
  const labelsOf = (text) => text.split(",").map((l) => l.trim()).filter(Boolean);

  function describeFilters(f) {
    const parts = [];
    for (const t of f.file_types || []) parts.push(`type: ${t}`);
    if (f.document) parts.push(`name: ${f.document}`);
    if (f.uploaded_from) parts.push(`from ${f.uploaded_from}`);
    if (f.uploaded_to) parts.push(`to ${f.uploaded_to}`);
    for (const l of f.labels || []) parts.push(`label: ${l}`);
    return parts.join(", ");
  }

  function chip(text, clear) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.title = "remove this filter";
    button.textContent = `${text} ×`;
    button.addEventListener("click", () => {
      clear();
      renderChips();
    });
    return button;
  }

  let shownChips = null;
  function renderChips() {
    const found = [];
    for (const box of form.querySelectorAll('input[name="file_types"]:checked')) {
      found.push(chip(`type: ${box.value}`, () => (box.checked = false)));
    }
    for (const [name, label] of [["document", "name: "], ["uploaded_from", "from "], ["uploaded_to", "to "]]) {
      const field = form.elements[name];
      if (field.value.trim()) found.push(chip(label + field.value.trim(), () => (field.value = "")));
    }
    const labels = form.elements.labels;
    for (const l of labelsOf(labels.value)) {
      found.push(
        chip(`label: ${l}`, () => (labels.value = labelsOf(labels.value).filter((x) => x !== l).join(", "))),
      );
    }
    // Leaving the labels field fires "change" on the press of a chip: replacing the same chips
    // then would take the button away before its click lands.
    const key = found.map((b) => b.textContent).join("\n");
    if (key === shownChips) return;
    shownChips = key;
    chips.replaceChildren(...found);
    chips.hidden = found.length === 0;
  }

  form.querySelector(".filters").addEventListener("input", renderChips);
  form.querySelector(".filters").addEventListener("change", renderChips);
  renderChips();
})();
