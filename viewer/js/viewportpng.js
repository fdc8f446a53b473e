// "Export PNG": what the viewport shows (image, measurements, corner text) as one PNG.

const LINE_HEIGHT = 16;
const MARGIN = 8;

/**
 * @param {HTMLCanvasElement} canvas the viewport's image canvas (device pixels)
 * @param {SVGSVGElement} svg its measurement layer (styled by attributes, so it serializes as shown)
 * @param {{topLeft:HTMLElement, topRight:HTMLElement, bottomLeft:HTMLElement, bottomRight:HTMLElement}} corners
 * @param {{width:number, height:number}} size viewport size in CSS pixels
 * @returns {Promise<Blob>} image/png
 */
export async function viewportPng(canvas, svg, corners, size) {
  const out = document.createElement('canvas');
  out.width = canvas.width;
  out.height = canvas.height;
  const ctx = out.getContext('2d');
  ctx.drawImage(canvas, 0, 0);
  const svgText = new XMLSerializer().serializeToString(svg);
  const url = URL.createObjectURL(new Blob([svgText], { type: 'image/svg+xml' }));
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    ctx.drawImage(image, 0, 0, out.width, out.height);
  } finally {
    URL.revokeObjectURL(url);
  }
  ctx.scale(out.width / size.width, out.height / size.height);
  ctx.font = '13px system-ui, sans-serif';
  ctx.fillStyle = '#e8e8e8';
  ctx.shadowColor = '#000';
  ctx.shadowBlur = 2;
  for (const [key, corner] of Object.entries(corners)) {
    const lines = [...corner.children].map((div) => div.textContent);
    const right = key.endsWith('Right');
    const bottom = key.startsWith('bottom');
    ctx.textAlign = right ? 'right' : 'left';
    lines.forEach((line, i) => {
      const y = bottom ? size.height - MARGIN - (lines.length - 1 - i) * LINE_HEIGHT : MARGIN + (i + 1) * LINE_HEIGHT - 4;
      ctx.fillText(line, right ? size.width - MARGIN : MARGIN, y);
    });
  }
  return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
}
