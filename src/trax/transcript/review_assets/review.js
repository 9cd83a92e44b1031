// Trax review page (trax.transcript.review): inlined into review.html at build time.
// Reads the transcript from <script type="application/json" id="trax-data"> and renders it with
// textContent only (never innerHTML), so transcript text is always shown as text.
// DOM contract (README, "Review page"): .utt[data-id][data-speaker][data-needs-review=reason],
// .w[data-start][data-end] (seconds), .spk[data-speaker] labels; html[data-ready] once interactive.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("trax-data").textContent);
  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
                 "#bcbd22", "#7f7f7f"];
  var audio = document.getElementById("audio");
  var main = document.getElementById("transcript");
  var statusLine = document.getElementById("status");
  var utts = DATA.utterances;
  var byId = {};
  var elements = [];  // utterance elements, in utterances' order (sorted by start)
  var starts = new Float64Array(utts.length);
  var speakers = {};
  var colour = {};
  DATA.speakers.forEach(function (s, i) {
    speakers[s.id] = s;
    colour[s.id] = s.id === "unknown" ? "#aaa" : PALETTE[i % PALETTE.length];
  });

  // Corrections so far: those this page was built with (merged.corrected.json) plus this session's.
  var saved = DATA.corrections || {speakers: [], utterances: []};
  var renames = {};
  saved.speakers.forEach(function (s) { renames[s.id] = s.name; });
  var edits = {};  // utterance id -> {id, start, end, speaker_was, speaker?, text?, reviewed?, words: {index: entry}}
  saved.utterances.forEach(function (c) {
    var entry = {id: c.id, start: c.start, end: c.end, speaker_was: c.speaker_was, words: {}};
    ["speaker", "text", "reviewed"].forEach(function (k) { if (k in c) entry[k] = c[k]; });
    (c.words || []).forEach(function (w) { entry.words[w.index] = w; });
    edits[c.id] = entry;
  });

  function clock(t) {
    var h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, s = t - 60 * Math.floor(t / 60);
    var ss = s.toFixed(1);
    return (h ? h + ":" + (m < 10 ? "0" : "") : "") + m + ":" + (s < 10 ? "0" : "") + ss;
  }
  function nameOf(id) { return renames[id] || (speakers[id] && speakers[id].name) || id; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function editOf(u) {
    if (!edits[u.id]) edits[u.id] = {id: u.id, start: u.start, end: u.end, speaker_was: u.speaker_was || u.speaker, words: {}};
    return edits[u.id];
  }

  function renderUtterance(u) {
    var div = el("div", "utt");
    div.id = "u" + u.id;
    div.dataset.id = u.id;
    div.dataset.speaker = u.speaker;
    div.style.borderLeftColor = colour[u.speaker] || "#999";
    if (u.reason) div.dataset.needsReview = u.reason;
    if (u.reviewed) div.classList.add("reviewed");
    if (u.corrected && u.corrected.length) div.classList.add("edited-utt");
    var head = el("div", "head");
    var spk = el("span", "spk", nameOf(u.speaker));
    spk.dataset.speaker = u.speaker;
    spk.style.color = colour[u.speaker] || "#555";
    spk.title = "click to move this utterance to another speaker";
    if (u.speaker_was && u.speaker_was !== u.speaker) {
      spk.classList.add("edited");
      spk.title = "moved from " + nameOf(u.speaker_was) + "; " + spk.title;
    }
    head.appendChild(spk);
    var time = el("span", "time", clock(u.start) + "–" + clock(u.end));
    time.title = "play from here";
    head.appendChild(time);
    if (u.reason) head.appendChild(el("span", "reason", "⚑ " + u.reason));
    var editButton = el("button", "", "✎ text");
    editButton.dataset.act = "text";
    head.appendChild(editButton);
    var reviewButton = el("button", "", u.reviewed ? "✓ reviewed" : "mark reviewed");
    reviewButton.dataset.act = "reviewed";
    head.appendChild(reviewButton);
    div.appendChild(head);
    var text = el("div", "text");
    var words = u.words;
    for (var i = 0; i < words.length; i++) {
      var w = words[i];
      var span = el("span", "w", w[2]);
      span.dataset.start = w[0];
      span.dataset.end = w[1];
      span.dataset.index = i;
      if (w[3] < DATA.low_probability) { span.classList.add("low"); span.title = "p=" + w[3]; }
      if (w.length > 4) { span.classList.add("edited"); span.title = w[4] ? "was: " + w[4] : "typed in a corrected text"; }
      if (i) text.appendChild(document.createTextNode(" "));
      text.appendChild(span);
    }
    div.appendChild(text);
    return div;
  }

  function idNote(id) { return nameOf(id) !== id ? " (" + id + ") " : " "; }
  function renderLegend() {
    var box = document.getElementById("speakers");
    box.textContent = "";
    DATA.speakers.forEach(function (s) {
      var item = el("span", "legend");
      item.style.borderLeftColor = colour[s.id];
      item.dataset.speaker = s.id;
      var label = el("span", "spk", nameOf(s.id));
      label.dataset.speaker = s.id;
      item.appendChild(label);
      item.appendChild(el("span", "sid", idNote(s.id)));
      var rename = el("button", "", "rename");
      rename.dataset.act = "rename";
      rename.dataset.speaker = s.id;
      item.appendChild(rename);
      box.appendChild(item);
    });
  }

  function render() {
    var fragment = document.createDocumentFragment();
    for (var i = 0; i < utts.length; i++) {
      var u = utts[i];
      byId[u.id] = i;
      starts[i] = u.start;
      elements[i] = renderUtterance(u);
      fragment.appendChild(elements[i]);
    }
    main.appendChild(fragment);
    renderLegend();
  }

  function replaceUtterance(i) {
    var fresh = renderUtterance(utts[i]);
    if (elements[i].classList.contains("current")) fresh.classList.add("current");
    main.replaceChild(fresh, elements[i]);
    elements[i] = fresh;
    nowWord = null;
  }

  // --- playback -------------------------------------------------------------------------------
  function seek(t, play) {
    audio.currentTime = t;
    if (play) { var p = audio.play(); if (p && p.catch) p.catch(function () {}); }
  }
  function lastStartAtOrBefore(t) {  // index of the last utterance starting at or before t, or -1
    var lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (starts[mid] <= t) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return found;
  }
  var nowWord = null;
  function highlight() {
    var t = audio.currentTime, target = null;
    var i = lastStartAtOrBefore(t);
    if (i >= 0 && t <= utts[i].end) {
      var words = utts[i].words, spans = elements[i].querySelectorAll(".w");
      for (var k = words.length - 1; k >= 0; k--) {
        if (words[k][0] <= t) { target = spans[k]; break; }
      }
    }
    if (target !== nowWord) {
      if (nowWord) nowWord.classList.remove("now");
      if (target) {
        target.classList.add("now");
        var box = target.getBoundingClientRect();
        if (box.top < 90 || box.bottom > window.innerHeight) target.scrollIntoView({block: "center"});
      }
      nowWord = target;
    }
  }
  function tick() { highlight(); if (!audio.paused) window.requestAnimationFrame(tick); }
  audio.addEventListener("play", function () { window.requestAnimationFrame(tick); });
  audio.addEventListener("seeked", highlight);
  audio.addEventListener("error", function () {
    document.getElementById("missing-audio").textContent =
      "Audio not found next to this page (" + DATA.audio + "): open results/" + DATA.sample_id + "/review.html from disk to listen.";
  });

  // --- flagged utterances: ←/→ ----------------------------------------------------------------
  var flagged = [];
  utts.forEach(function (u, i) { if (u.reason) flagged.push(i); });
  var cursor = -1;
  function goTo(i, play) {
    var old = main.querySelector(".utt.current");
    if (old) old.classList.remove("current");
    elements[i].classList.add("current");
    elements[i].scrollIntoView({block: "center"});
    seek(utts[i].start, play);
  }
  function step(direction) {
    if (!flagged.length) { statusLine.textContent = "no utterance needs review"; return; }
    if (cursor < 0) {
      var here = lastStartAtOrBefore(audio.currentTime);
      cursor = direction > 0 ? -1 : flagged.length;
      for (var k = 0; k < flagged.length; k++) if (flagged[k] <= here) cursor = k + (direction > 0 ? 0 : 1);
    }
    cursor = Math.max(0, Math.min(flagged.length - 1, cursor + direction));
    goTo(flagged[cursor], !audio.paused);
    statusLine.textContent = "needs review " + (cursor + 1) + " of " + flagged.length;
  }
  function editing(target) {
    return target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
  }
  document.addEventListener("keydown", function (event) {
    if (editing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === " ") {
      event.preventDefault();
      if (audio.paused) { var p = audio.play(); if (p && p.catch) p.catch(function () {}); } else audio.pause();
    } else if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
    else if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
  });

  // --- corrections ----------------------------------------------------------------------------
  function inlineEditor(tag, value, anchor, commit) {
    var input = el(tag, "edit");
    input.value = value;
    if (tag === "input") input.size = Math.max(4, value.length + 2);
    anchor.replaceWith(input);
    input.focus();
    input.select();
    var done = false;
    function finish(accept) {
      if (done) return;
      done = true;
      if (input.isConnected) input.replaceWith(anchor);
      if (accept && input.value.trim() !== value.trim()) commit(input.value.trim());
    }
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); finish(true); }
      else if (event.key === "Escape") finish(false);
    });
    input.addEventListener("blur", function () { finish(true); });
    return input;
  }
  function markCorrected(u, what) {
    u.corrected = (u.corrected || []).filter(function (k) { return k !== what; }).concat([what]);
  }
  function setWord(i, index, value) {
    var u = utts[i], w = u.words[index];
    if (!value) { statusLine.textContent = "a word cannot be empty: edit the utterance's text instead"; replaceUtterance(i); return; }
    var entry = editOf(u);
    if ("text" in entry) {  // the words were re-derived from an edited text: edit that text
      var tokens = u.words.map(function (x) { return x[2]; });
      tokens[index] = value;
      setText(i, tokens.join(" "));
      return;
    }
    var was = w.length > 4 ? w[4] : w[2];
    if (value === was) delete entry.words[index];
    else entry.words[index] = {index: index, start: w[0], end: w[1], was: was, word: value};
    u.words[index] = value === was ? [w[0], w[1], was, w[3]] : [w[0], w[1], value, w[3], was];
    markCorrected(u, "words");
    replaceUtterance(i);
    changed();
  }
  function setText(i, value) {
    var u = utts[i];
    if (!value) { statusLine.textContent = "an utterance's text cannot be empty"; replaceUtterance(i); return; }
    var entry = editOf(u);
    entry.text = value;
    entry.words = {};
    // Show the new text as words spread over the utterance's time, as the workflow will.
    var tokens = value.split(/\s+/).filter(Boolean), total = 0;
    tokens.forEach(function (t) { total += t.length + 1; });
    var at = u.start, span = u.end - u.start, old = u.words;
    u.words = tokens.map(function (t, k) {
      if (tokens.length === old.length) {
        var o = old[k], was = o.length > 4 ? o[4] : o[2];
        return t === was ? [o[0], o[1], t, o[3]] : [o[0], o[1], t, o[3], was];
      }
      var s = at; at += span * (t.length + 1) / total;
      return [s, k === tokens.length - 1 ? u.end : at, t, 1, ""];
    });
    markCorrected(u, "text");
    replaceUtterance(i);
    changed();
  }
  function moveUtterance(i, speaker) {
    var u = utts[i], entry = editOf(u);
    if (speaker === entry.speaker_was) delete entry.speaker; else entry.speaker = speaker;
    u.speaker = speaker;
    markCorrected(u, "speaker");
    replaceUtterance(i);
    changed();
  }
  function toggleReviewed(i) {
    var u = utts[i], entry = editOf(u);
    u.reviewed = !u.reviewed;
    if (u.reviewed) entry.reviewed = true; else delete entry.reviewed;
    replaceUtterance(i);
    changed();
  }
  function renameSpeaker(id, name) {
    renames[id] = name;
    var labels = document.querySelectorAll('.spk[data-speaker="' + CSS.escape(id) + '"]');
    for (var k = 0; k < labels.length; k++) labels[k].textContent = name;
    var note = document.querySelector('#speakers .legend[data-speaker="' + CSS.escape(id) + '"] .sid');
    if (note) note.textContent = idNote(id);
    changed();
  }
  function speakerChooser(i, label) {
    var select = el("select", "edit");
    DATA.speakers.forEach(function (s) {
      var option = el("option", "", nameOf(s.id) + (nameOf(s.id) !== s.id ? " (" + s.id + ")" : ""));
      option.value = s.id;
      option.selected = s.id === utts[i].speaker;
      select.appendChild(option);
    });
    label.replaceWith(select);
    select.focus();
    select.addEventListener("change", function () { moveUtterance(i, select.value); });
    select.addEventListener("blur", function () { if (select.isConnected) replaceUtterance(i); });
  }

  var dirty = 0;
  function changed() {
    dirty++;
    statusLine.textContent = "unsaved corrections: press “Save corrections”";
  }
  function corrections() {
    var ids = Object.keys(edits).map(Number).sort(function (a, b) { return a - b; });
    var list = [];
    ids.forEach(function (id) {
      var e = edits[id], out = {id: e.id, start: e.start, end: e.end, speaker_was: e.speaker_was};
      if ("speaker" in e) out.speaker = e.speaker;
      if ("text" in e) out.text = e.text;
      if (e.reviewed) out.reviewed = true;
      var words = Object.keys(e.words).map(Number).sort(function (a, b) { return a - b; })
        .map(function (k) { return e.words[k]; });
      if (words.length && !("text" in e)) out.words = words;
      if (Object.keys(out).length > 4) list.push(out);
    });
    var renamed = Object.keys(renames).sort().filter(function (id) {
      return renames[id] && renames[id] !== (speakers[id] && speakers[id].original_name);
    }).map(function (id) { return {id: id, name: renames[id]}; });
    return {format: "trax-corrections/1", sample_id: DATA.sample_id, input_sha256: DATA.input_sha256,
            merged_sha256: DATA.merged_sha256, speakers: renamed, utterances: list};
  }
  function save() {
    var text = JSON.stringify(corrections(), null, 2) + "\n";
    var link = el("a");
    link.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
    link.download = "corrections.json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    dirty = 0;
    statusLine.textContent = "saved corrections.json: put it at results/" + DATA.sample_id +
      "/corrections.json and run snakemake again for merged.corrected.json and corrected subtitles";
  }
  window.traxCorrections = corrections;  // for scripts and tests

  main.addEventListener("click", function (event) {
    var t = event.target, div = t.closest(".utt");
    if (!div || editing(t)) return;
    var i = byId[div.dataset.id];
    if (t.classList.contains("w")) {
      seek(parseFloat(t.dataset.start), true);
      for (var k = flagged.length - 1; k >= -1; k--) if (k < 0 || flagged[k] <= i) { cursor = k; break; }
    } else if (t.classList.contains("time")) seek(utts[i].start, true);
    else if (t.classList.contains("spk")) speakerChooser(i, t);
    else if (t.dataset.act === "text") {
      var box = div.querySelector(".text");
      inlineEditor("textarea", utts[i].words.map(function (w) { return w[2]; }).join(" "), box,
                   function (value) { setText(i, value); });
    } else if (t.dataset.act === "reviewed") toggleReviewed(i);
  });
  main.addEventListener("dblclick", function (event) {
    var t = event.target;
    if (!t.classList.contains("w")) return;
    var i = byId[t.closest(".utt").dataset.id], index = Number(t.dataset.index);
    audio.pause();
    inlineEditor("input", utts[i].words[index][2], t, function (value) { setWord(i, index, value); });
  });
  document.getElementById("speakers").addEventListener("click", function (event) {
    var t = event.target;
    if (t.dataset.act !== "rename") return;
    var id = t.dataset.speaker, label = t.parentNode.querySelector(".spk");
    inlineEditor("input", nameOf(id), label, function (value) { renameSpeaker(id, value); label.textContent = value; });
  });
  document.getElementById("save").addEventListener("click", save);
  window.addEventListener("beforeunload", function (event) { if (dirty) { event.preventDefault(); event.returnValue = ""; } });

  DATA.speakers.forEach(function (s) { s.original_name = s.original_name === undefined ? s.name : s.original_name; });
  render();
  if (location.hash && document.getElementById(location.hash.slice(1))) {
    var target = document.getElementById(location.hash.slice(1));
    target.classList.add("current");
    target.scrollIntoView({block: "center"});
    var index = byId[target.dataset.id];
    if (index !== undefined) { audio.currentTime = utts[index].start; cursor = flagged.indexOf(index); }
  }
  statusLine.textContent = utts.length + " utterances, " + flagged.length + " need review" +
    (flagged.length ? " (→ next, ← previous)" : "") + "; click a word to play from it, double-click to correct it";
  window.traxReadyMs = performance.now();
  document.documentElement.dataset.ready = "1";
  // After the first frame that shows the transcript (style, layout and paint done): what
  // bench/review.py reports as time to interactive.
  window.requestAnimationFrame(function () { setTimeout(function () { window.traxPaintedMs = performance.now(); }, 0); });
})();
