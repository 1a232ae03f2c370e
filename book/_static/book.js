// tem-book: click a figure to see it full size, click again (or press Escape) to close.
document.addEventListener("DOMContentLoaded", () => {
  const close = () =>
    document.querySelectorAll("img.tem-zoomed").forEach((i) => i.classList.remove("tem-zoomed"));
  document.querySelectorAll(".cell_output img").forEach((img) => {
    img.addEventListener("click", () => {
      const zoomed = img.classList.contains("tem-zoomed");
      close();
      if (!zoomed) img.classList.add("tem-zoomed");
    });
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
});
