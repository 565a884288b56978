// Shows the script tag with this server's real address, so it can be copied as it is.
(() => {
  const code = document.getElementById("snippet");
  if (code) code.textContent = `<script src="${location.origin}/widget.js" defer></script>`;
})();
