// The panel's stylesheet (/widget/panel.css). Styles go into adoptedStyleSheets (a page's CSP does not govern
// those); if the stylesheet cannot be fetched (no CORS, old browser) a <link> inside the shadow root does the same job.

export async function loadStyles(root, server) {
  const href = server + "/widget/panel.css";
  try {
    if (!root.adoptedStyleSheets || !("replace" in CSSStyleSheet.prototype)) throw new Error("no constructable sheets");
    const res = await fetch(href, { credentials: "omit" });
    if (!res.ok) throw new Error(String(res.status));
    const sheet = new CSSStyleSheet();
    await sheet.replace(await res.text());
    root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
  } catch (_) {
    await new Promise((resolve) => {
      const link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = href;
      link.onload = link.onerror = resolve;
      root.prepend(link);
    });
  }
}
