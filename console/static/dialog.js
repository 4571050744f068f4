// The signature dialog: a modal <dialog> (focus stays inside, Esc closes it), opened by its
// button; the form inside posts like any other and the server checks everything again.
"use strict";
document.querySelectorAll(".open-dialog").forEach((button) => {
  const dialog = document.getElementById(button.dataset.dialog);
  if (!dialog) return;
  button.addEventListener("click", () => {
    dialog.showModal();
    const first = dialog.querySelector("input[type=radio], input:not([type=hidden])");
    if (first) first.focus();
  });
  dialog.querySelectorAll(".close-dialog").forEach((close) => close.addEventListener("click", () => {
    dialog.close();
    button.focus();
  }));
});
