// The agent page: a contact's communications and their stored emails and letters.
// The API key lives in sessionStorage (this tab only) and travels as an Authorization header;
// every value from the API is inserted as text, never as HTML. Email HTML is shown in a
// sandboxed frame (no scripts, no same-origin access) with the open pixel already removed.
"use strict";

const KEY = "comms.apiKey";
const $ = (id) => document.getElementById(id);
let nextCursor = null;
let currentRef = null;
let objectUrl = null;

function apiKey() { return sessionStorage.getItem(KEY); }

function say(text) { $("message").textContent = text || ""; }

async function api(path, asBlob) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + apiKey() } });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); message = body.message || message; } catch (e) { /* not JSON */ }
    if (response.status === 401) { signOut(); }
    throw new Error(message);
  }
  return asBlob ? response.blob() : response.json();
}

function show(signedIn) {
  $("login-section").hidden = signedIn;
  $("main-section").hidden = !signedIn;
  $("logout").hidden = !signedIn;
}

function signOut() {
  sessionStorage.removeItem(KEY);
  $("who").textContent = "";
  show(false);
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  $("api-key").value = "";
  try {
    const me = await api("/v1/me");
    $("who").textContent = me.name + " (" + me.role + ")";
    show(true);
    say("");
  } catch (err) {
    sessionStorage.removeItem(KEY);
    say("Sign-in failed: " + err.message);
  }
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) { td.className = className; }
  row.appendChild(td);
  return td;
}

function addRow(item) {
  const tr = document.createElement("tr");
  tr.dataset.id = item.id;
  cell(tr, item.id);
  cell(tr, (item.created_at || "").replace("T", " ").slice(0, 19));
  cell(tr, item.media);
  cell(tr, item.template_code);
  cell(tr, item.subject);
  cell(tr, item.address);
  cell(tr, item.state, "state-" + item.state.split(" ")[0]);
  cell(tr, [item.error_code, item.error_description].filter(Boolean).join(": "));
  cell(tr, item.tracking.opens);
  cell(tr, item.tracking.clicks);
  const action = cell(tr, "");
  if (item.document) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "open-document";
    button.dataset.document = item.document.id;
    button.textContent = item.document.kind === "email" ? "Open email" : "Open letter";
    button.addEventListener("click", () => openDocument(item));
    action.appendChild(button);
  }
  $("communications").querySelector("tbody").appendChild(tr);
}

async function load(ref, cursor) {
  let path = "/v1/contacts/" + encodeURIComponent(ref) + "/communications?limit=50";
  if (cursor) { path += "&cursor=" + encodeURIComponent(cursor); }
  const page = await api(path);
  $("contact-name").textContent = page.contact.name + " (" + page.contact.ref + ")";
  page.items.forEach(addRow);
  $("communications").hidden = false;
  nextCursor = page.next_cursor;
  $("more").hidden = !nextCursor;
  if (!cursor && page.items.length === 0) { say("No communications for this contact."); }
}

// Requests and entries that were not sent (unknown template, opted out, no address, a
// gateway's refusal...), with their reasons: shown beside the sent ones.
async function loadNotSent(ref) {
  const body = $("not-sent").querySelector("tbody");
  body.replaceChildren();
  const page = await api("/v1/contacts/" + encodeURIComponent(ref) + "/not-sent?limit=100");
  page.items.forEach((item) => {
    const tr = document.createElement("tr");
    tr.dataset.request = item.request_id;
    cell(tr, item.request_id);
    cell(tr, item.entry_id);
    cell(tr, (item.created_at || "").replace("T", " ").slice(0, 19));
    cell(tr, item.template_code);
    cell(tr, item.media);
    cell(tr, item.status);
    cell(tr, item.code);
    cell(tr, item.reason);
    body.appendChild(tr);
  });
  const any = page.items.length > 0;
  $("not-sent").hidden = !any;
  $("not-sent-title").hidden = !any;
}

async function search(event) {
  event.preventDefault();
  say("");
  currentRef = $("contact-ref").value.trim();
  $("communications").querySelector("tbody").replaceChildren();
  $("viewer").hidden = true;
  $("not-sent").hidden = true;
  $("not-sent-title").hidden = true;
  try { await load(currentRef, null); } catch (err) {
    $("communications").hidden = true;
    $("contact-name").textContent = "";
    say(err.message);
  }
  try { await loadNotSent(currentRef); } catch (err) { say(err.message); }
}

function header(list, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value || "";
  list.append(dt, dd);
}

async function openDocument(item) {
  say("");
  const body = $("viewer-body");
  const headers = $("viewer-headers");
  body.replaceChildren();
  headers.replaceChildren();
  if (objectUrl) { URL.revokeObjectURL(objectUrl); objectUrl = null; }
  try {
    if (item.document.kind === "email") {
      const mail = await api("/v1/documents/" + item.document.id + "/preview");
      $("viewer-title").textContent = "Email " + item.id + ": " + (mail.subject || "");
      header(headers, "From", mail.sender);
      header(headers, "To", mail.to);
      header(headers, "Date", mail.date);
      if (mail.html) {
        const frame = document.createElement("iframe");
        frame.setAttribute("sandbox", "");
        frame.id = "email-html";
        frame.srcdoc = mail.html;
        body.appendChild(frame);
      }
      const text = document.createElement("pre");
      text.id = "email-text";
      text.textContent = mail.text || "";
      body.appendChild(text);
    } else {
      const blob = await api("/v1/documents/" + item.document.id, true);
      objectUrl = URL.createObjectURL(blob);
      $("viewer-title").textContent = "Letter " + item.id;
      header(headers, "Type", blob.type);
      header(headers, "Size", blob.size + " bytes");
      const frame = document.createElement("iframe");
      frame.id = "letter-pdf";
      frame.src = objectUrl;
      const link = document.createElement("a");
      link.href = objectUrl;
      link.download = item.document.id + ".pdf";
      link.id = "letter-download";
      link.textContent = "Download the letter (" + blob.size + " bytes)";
      body.append(link, frame);
    }
    $("viewer").hidden = false;
  } catch (err) {
    say(err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  $("search-form").addEventListener("submit", search);
  $("logout").addEventListener("click", signOut);
  $("more").addEventListener("click", () => load(currentRef, nextCursor).catch((e) => say(e.message)));
  if (apiKey()) {
    api("/v1/me").then((me) => {
      $("who").textContent = me.name + " (" + me.role + ")";
      show(true);
    }).catch(() => signOut());
  } else {
    show(false);
  }
});
