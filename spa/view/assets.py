"""The stylesheet and script of the HTML view, inlined into every page (it works offline:
no CDN, no file beside it)."""

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, sans-serif; color: #222; display: flex; height: 100vh; }
#side { width: 430px; min-width: 430px; display: flex; flex-direction: column; border-right: 1px solid #ccc; }
#head { padding: 10px 12px; border-bottom: 1px solid #ddd; }
#head h1 { font-size: 15px; margin: 0 0 4px; word-break: break-all; }
#head table { border-collapse: collapse; margin-top: 6px; }
#head td, #head th { padding: 1px 8px 1px 0; text-align: left; font-weight: normal; }
#head th { color: #666; }
#search { width: 100%; padding: 5px; margin-top: 8px; font: inherit; }
#found { color: #666; font-size: 12px; }
#groups { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; }
.group { padding: 4px 12px; border-bottom: 1px solid #eee; cursor: pointer; display: flex; gap: 8px; }
.group:hover { background: #f3f6fb; }
.group.selected { background: #dde8f8; }
.swatch { width: 12px; height: 12px; border-radius: 2px; margin-top: 3px; flex: none; border: 1px solid #0003; }
.group .what { flex: 1; }
.group .share { color: #555; }
.blocked .what { color: #777; }
#detail { border-top: 1px solid #ccc; padding: 8px 12px; max-height: 40%; overflow-y: auto; background: #fafafa; }
#detail h2 { font-size: 14px; margin: 0 0 4px; }
#detail ul { margin: 4px 0; padding-left: 18px; }
#detail .reason { color: #a33; }
#canvas { flex: 1; overflow: auto; background: #fdfdfd; }
svg text { font: 11px system-ui, sans-serif; pointer-events: none; }
.node rect { stroke: #888; stroke-width: 1; rx: 4; }
.node.dim rect { opacity: 0.25; }
.node.hl rect { stroke: #000; stroke-width: 3; }
.node.match rect { stroke: #e07000; stroke-width: 3; }
.edge { stroke: #bbb; fill: none; }
"""

JS = """
"use strict";
const data = JSON.parse(document.getElementById("spa-data").textContent);
const SVG = "http://www.w3.org/2000/svg";
const W = data.box[0], H = data.box[1];
const byGroup = new Map(data.groups.map(g => [g.id, g]));
const nodeEls = [];

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function pct(x) { return (100 * x).toFixed(1) + "%"; }

function drawGraph() {
  const maxX = Math.max(0, ...data.nodes.map(n => n.x)) + W + 20;
  const maxY = Math.max(0, ...data.nodes.map(n => n.y)) + H + 20;
  const svg = el("svg", {width: maxX, height: maxY, id: "graph"}, document.getElementById("canvas"));
  const edges = el("g", {}, svg);
  for (const [a, b] of data.edges) {
    const p = data.nodes[a], q = data.nodes[b];
    const x1 = p.x + W / 2 + 10, y1 = p.y + H + 10, x2 = q.x + W / 2 + 10, y2 = q.y + 10;
    el("path", {d: `M${x1},${y1} C${x1},${y1 + 14} ${x2},${y2 - 14} ${x2},${y2}`, class: "edge"}, edges);
  }
  data.nodes.forEach((n, i) => {
    const g = el("g", {class: "node", transform: `translate(${n.x + 10},${n.y + 10})`}, svg);
    const group = n.group === null ? null : byGroup.get(n.group);
    el("rect", {width: W, height: H, fill: group ? group.color : "#eee"}, g);
    const t = el("text", {x: 6, y: 17}, g);
    t.textContent = n.op + (n.short ? " " + n.short : "");
    el("title", {}, g).textContent = n.name + " (" + n.op + ")";
    g.addEventListener("click", () => showNode(i));
    nodeEls.push(g);
  });
}

function listGroups() {
  const ul = document.getElementById("groups");
  for (const g of data.groups) {
    const li = document.createElement("li");
    li.className = "group " + (g.prunable ? "prunable" : "blocked");
    li.dataset.gid = g.id;
    const change = g.after === null || g.after === undefined ? "" : ` \\u2192 ${g.after}`;
    li.innerHTML = `<span class="swatch" style="background:${g.color}"></span>` +
      `<span class="what">#${g.id} ${g.label}: ${g.channels}${change} channels` +
      `${g.prunable ? "" : " (blocked)"}</span><span class="share">${pct(g.macs_share)} MACs</span>`;
    li.addEventListener("click", () => showGroup(g.id));
    ul.appendChild(li);
  }
}

function clearMarks() {
  nodeEls.forEach(e => e.classList.remove("hl", "dim"));
  document.querySelectorAll(".group.selected").forEach(e => e.classList.remove("selected"));
}

function listHtml(items, limit) {
  const shown = items.slice(0, limit).map(x => `<li>${esc(x)}</li>`).join("");
  return `<ul>${shown}${items.length > limit ? `<li>... ${items.length - limit} more</li>` : ""}</ul>`;
}

function esc(s) {
  return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}

function showGroup(id) {
  const g = byGroup.get(id);
  clearMarks();
  document.querySelector(`.group[data-gid="${id}"]`).classList.add("selected");
  const mine = new Set(g.nodes);
  nodeEls.forEach((e, i) => e.classList.add(mine.has(i) ? "hl" : "dim"));
  const change = g.after === null || g.after === undefined ? "" : `, ${g.channels} \\u2192 ${g.after} after pruning`;
  document.getElementById("detail").innerHTML =
    `<h2>Group #${g.id}: ${esc(g.label)}</h2>` +
    `<div>${g.channels} channels${change}; ${pct(g.macs_share)} of the MACs; kind <b>${esc(g.kind)}</b>; ` +
    `${g.prunable ? "prunable" : "blocked"}</div>` +
    (g.reason ? `<div class="reason">why: ${esc(g.reason)}</div>` : "") +
    `<div><b>layers</b> (${g.layers.length})</div>${listHtml(g.layers, 50)}` +
    `<div><b>members</b> (${g.members.length} parameter slices)</div><div class="members">${listHtml(g.members, 200)}</div>`;
  const first = g.nodes.length ? nodeEls[g.nodes[0]] : null;
  if (first) first.scrollIntoView({block: "center", inline: "center"});
}

function showNode(i) {
  const n = data.nodes[i];
  const groups = data.groups.filter(g => g.nodes.includes(i));
  document.getElementById("detail").innerHTML = `<h2>${esc(n.name)}</h2><div>${esc(n.op)}</div>` +
    `<div>groups: ${groups.map(g => `<a href="#" data-gid="${g.id}">#${g.id}</a>`).join(", ") || "none"}</div>`;
  document.querySelectorAll("#detail a[data-gid]").forEach(a =>
    a.addEventListener("click", ev => { ev.preventDefault(); showGroup(Number(a.dataset.gid)); }));
}

function search(text) {
  const q = text.trim().toLowerCase();
  let hits = 0, first = null;
  data.nodes.forEach((n, i) => {
    const hit = q !== "" && n.name.toLowerCase().includes(q);
    nodeEls[i].classList.toggle("match", hit);
    if (hit) { hits += 1; if (first === null) first = nodeEls[i]; }
  });
  document.getElementById("found").textContent = q ? `${hits} node${hits === 1 ? "" : "s"} match` : "";
  if (first) first.scrollIntoView({block: "center", inline: "center"});
}

drawGraph();
listGroups();
document.getElementById("search").addEventListener("input", ev => search(ev.target.value));
"""
