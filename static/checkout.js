// The hosted checkout's script. With our own card fields it only improves a form that works
// without it; with the processor's card fields (Stripe Elements) it runs the card step: start a
// setup on our server, confirm the card with Stripe.js, then hand back to our server, which reads
// the result from Stripe and charges.
(function () {
  "use strict";

  // A 3-D Secure check of the processor's own, on the authentication page.
  var challenge = document.getElementById("challenge-form");
  if (challenge && challenge.dataset.clientSecret && window.Stripe) {
    var challenger = window.Stripe(challenge.dataset.stripeKey);
    var running = false;
    var runChallenge = function (e) {
      if (e) e.preventDefault();
      if (running) return;
      running = true;
      // Whatever the dialog answers, our server asks Stripe how the payment stands.
      challenger.confirmCardPayment(challenge.dataset.clientSecret).then(function () {
        challenge.submit();
      }, function () {
        challenge.submit();
      });
    };
    challenge.addEventListener("submit", runChallenge);
    runChallenge();
    return;
  }

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
    if (form.dataset.stripeKey) return;
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
    busy(true);
  });

  window.addEventListener("pageshow", function (ev) {
    if (ev.persisted && button) { delete form.dataset.submitted; button.disabled = false; }
  });

  if (form.dataset.stripeKey) stripeCardStep();

  function busy(on) {
    if (!button) return;
    if (on) {
      if (!button.dataset.label) button.dataset.label = button.textContent;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      var spin = document.createElement("span");
      spin.className = "spinner";
      spin.setAttribute("aria-hidden", "true");
      button.textContent = "Processing…";
      button.prepend(spin);
    } else {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = button.dataset.label || button.textContent;
    }
  }

  function notice(message) {
    var el = document.getElementById("form-notice");
    if (!el) {
      el = document.createElement("p");
      el.className = "decline";
      el.id = "form-notice";
      el.setAttribute("role", "alert");
      form.parentNode.insertBefore(el, form);
    }
    el.textContent = message;
  }

  function stripeCardStep() {
    var mount = document.getElementById("card-element");
    var cardError = document.getElementById("card-element-error");
    var confirmForm = document.getElementById("confirm-form");
    if (!window.Stripe || !mount || !confirmForm) {
      notice("The card field could not be loaded. Please check your connection and reload the page.");
      if (button) button.disabled = true;
      return;
    }
    var stripe = window.Stripe(form.dataset.stripeKey);
    var card = stripe.elements().create("card", { hidePostalCode: false });
    card.mount(mount);
    var working = false;

    function showCardError(message) {
      cardError.textContent = message || "";
      cardError.hidden = !message;
    }

    // Replaces the plain-form handler above: the card never goes through our server.
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      e.stopImmediatePropagation();
      if (working) return;
      working = true;
      busy(true);
      showCardError("");
      Array.prototype.forEach.call(form.querySelectorAll("[data-live]"), function (el) { el.remove(); });
      var fail = function (message) {
        working = false;
        busy(false);
        if (message) notice(message);
      };
      fetch(form.dataset.setupUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(new FormData(form)).toString()
      }).then(function (res) {
        return res.json().then(function (body) { return { status: res.status, body: body }; });
      }).then(function (reply) {
        var body = reply.body || {};
        if (body.redirect) { window.location.assign(body.redirect); return; }
        if (body.errors) {
          body.errors.forEach(function (err) {
            var input = document.getElementById(err.param) || form.querySelector("[name='" + err.param + "']");
            if (input) showError(input, err.message);
          });
          var first = form.querySelector("[aria-invalid=true]");
          if (first) first.focus();
          fail("Please check the highlighted fields.");
          return;
        }
        if (!body.client_secret) { fail(body.message || "Something went wrong. Please try again."); return; }
        var name = [form.first_name && form.first_name.value, form.last_name && form.last_name.value]
          .filter(Boolean).join(" ");
        // The invoice page has no contact fields: the processor keeps the customer's details.
        var details = {};
        if (form.email) details.email = form.email.value;
        if (name) details.name = name;
        return stripe.confirmCardSetup(body.client_secret, {
          payment_method: { card: card, billing_details: details }
        }).then(function (result) {
          if (result && result.error && result.error.type === "validation_error") {
            // Stripe checked the fields in the browser and sent nothing: fix and try again.
            showCardError(result.error.message);
            fail("");
            return;
          }
          // Declined, confirmed or challenged: our server reads the outcome from Stripe.
          confirmForm.attempt.value = body.attempt;
          confirmForm.submit();
        });
      }).catch(function () {
        fail("We could not reach the payment service. Nothing was charged. Please try again.");
      });
    }, true);
  }
})();
