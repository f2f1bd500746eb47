// Progressive enhancement for the hosted checkout: the form works without this file.
(function () {
  "use strict";
  var form = document.getElementById("checkout-form");
  if (!form) return;
  var number = document.getElementById("card_number");
  var expiry = document.getElementById("card_expiry");
  var button = document.getElementById("pay-button");

  function digits(s) { return s.replace(/\D/g, ""); }

  function luhn(n) {
    var sum = 0, dbl = false;
    for (var i = n.length - 1; i >= 0; i--) {
      var d = +n[i];
      if (dbl) { d *= 2; if (d > 9) d -= 9; }
      sum += d; dbl = !dbl;
    }
    return n.length >= 12 && sum % 10 === 0;
  }

  function brand(n) {
    if (/^4/.test(n)) return "Visa";
    if (/^(5[1-5]|2[2-7])/.test(n)) return "Mastercard";
    if (/^3[47]/.test(n)) return "American Express";
    if (/^(6011|65)/.test(n)) return "Discover";
    return "";
  }

  function showError(input, message) {
    var id = input.id + "-error";
    var el = document.getElementById(id);
    if (!message) {
      if (el && el.dataset.live) el.remove();
      if (!el || el.dataset.live) input.setAttribute("aria-invalid", "false");
      return;
    }
    if (!el) {
      el = document.createElement("p");
      el.className = "error";
      el.id = id;
      el.dataset.live = "1";
      input.insertAdjacentElement("afterend", el);
    }
    el.textContent = message;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", id);
  }

  if (number) {
    number.addEventListener("input", function () {
      var d = digits(number.value).slice(0, 19);
      var grouped = d.replace(/(\d{4})(?=\d)/g, "$1 ");
      if (grouped !== number.value) number.value = grouped;
      var label = document.querySelector("label[for=card_number]");
      var b = brand(d);
      if (label) label.textContent = b ? "Card number (" + b + ")" : "Card number";
    });
    number.addEventListener("blur", function () {
      var d = digits(number.value);
      showError(number, d && !luhn(d) ? "Your card number is invalid." : "");
    });
  }

  if (expiry) {
    expiry.addEventListener("input", function (e) {
      var d = digits(expiry.value).slice(0, 4);
      if (e.inputType && e.inputType.indexOf("delete") === 0) return;
      expiry.value = d.length > 2 ? d.slice(0, 2) + " / " + d.slice(2) : d;
    });
  }

  form.addEventListener("submit", function (e) {
    if (number) {
      var d = digits(number.value);
      if (!luhn(d)) {
        showError(number, d ? "Your card number is invalid." : "Enter your card number.");
        number.focus();
        e.preventDefault();
        return;
      }
    }
    if (form.dataset.submitted) { e.preventDefault(); return; }
    form.dataset.submitted = "1";
    if (button) {
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      var spin = document.createElement("span");
      spin.className = "spinner";
      spin.setAttribute("aria-hidden", "true");
      button.textContent = "Processing…";
      button.prepend(spin);
    }
  });

  window.addEventListener("pageshow", function (ev) {
    if (ev.persisted && button) { delete form.dataset.submitted; button.disabled = false; }
  });
})();
