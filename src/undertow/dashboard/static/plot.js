// Small SVG line plots, drawn with DOM calls only (no library, nothing inline).
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svgNode(name, attrs) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// Draw `series` ([{name, values: [number|null]}]) into `box` as lines of width x height;
// with `legend`, the names are written along the top.
function drawPlot(box, series, width, height, legend) {
  if (width === 0) width = Math.max(box.clientWidth - 2, 300);  // 0: as wide as its box
  const pad = legend ? 16 : 3;
  let legendX = 6;
  const svg = svgNode("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  const values = series.flatMap((s) => s.values.filter((v) => v !== null));
  const top = Math.max(1e-9, ...values);
  const count = Math.max(2, ...series.map((s) => s.values.length));
  svg.appendChild(svgNode("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "axis" }));
  series.forEach((s, i) => {
    let path = "";
    let pen = false;
    s.values.forEach((v, j) => {
      if (v === null) { pen = false; return; }
      const x = (j / (count - 1)) * (width - 2) + 1;
      const y = height - 2 - (v / top) * (height - pad - 4);
      path += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
      pen = true;
    });
    if (path) svg.appendChild(svgNode("path", { d: path, class: `line c${i % 6}` }));
    if (legend) {
      const label = svgNode("text", { x: legendX, y: 11, class: `label k${i % 6}` });
      label.textContent = s.name;
      svg.appendChild(label);
      legendX += s.name.length * 6 + 24;
    }
  });
  const peak = svgNode("text", { x: width - 4, y: legend ? 24 : 10, class: "label", "text-anchor": "end" });
  peak.textContent = values.length && top > 1e-9 ? formatNumber(top) : "";
  svg.appendChild(peak);
  box.replaceChildren(svg);
}

function formatNumber(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}
