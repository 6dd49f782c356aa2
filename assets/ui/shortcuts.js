// Keyboard shortcuts for the Pairs tab (Gradio has no hotkeys of its own).
// 1 2 3 4: first better, second better, tie, both bad; s: skip; ← →: previous / next pair; u: undo.
// Ignored while typing in a text field, with a modifier key held, or when the Pairs tab is hidden.
(function () {
  const KEYS = {
    "1": "vote-first",
    "2": "vote-second",
    "3": "vote-tie",
    "4": "vote-bothbad",
    "s": "vote-skip",
    "S": "vote-skip",
    "ArrowLeft": "pairs-prev",
    "ArrowRight": "pairs-next",
    "u": "pairs-undo",
    "U": "pairs-undo",
  };
  function typing(target) {
    if (!target) return false;
    const tag = (target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }
  function visible(el) {
    return !!el && el.offsetParent !== null;
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (typing(event.target)) return;
    const id = KEYS[event.key];
    if (!id) return;
    const button = document.getElementById(id);
    if (!visible(button) || button.disabled) return;
    event.preventDefault();
    button.click();
  });
})();
