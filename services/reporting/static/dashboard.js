// pmo dashboard: fetch the server-rendered panels, then refresh them whenever the portfolio's
// change marker moves. An instant picked in the header shows the portfolio as it was then
// (the history; refused before the kept history) until Live is pressed. No framework, no
// external assets.
(function () {
  "use strict";
  const portfolio = document.body.dataset.portfolio;
  const params = new URLSearchParams(window.location.search);
  if (params.get("token")) {
    sessionStorage.setItem("pmo-token", params.get("token"));
    history.replaceState(null, "", window.location.pathname);
  }
  let token = sessionStorage.getItem("pmo-token");
  if (!token) {
    token = window.prompt("API token") || "";
    sessionStorage.setItem("pmo-token", token);
  }
  const headers = { Authorization: "Bearer " + token };
  const status = document.getElementById("status");
  const picker = document.getElementById("as-of");
  const live = document.getElementById("live");
  const base = "/api/v1/portfolios/" + encodeURIComponent(portfolio);
  const panels = "/dashboard/" + encodeURIComponent(portfolio) + "/panels";
  let marker = null;
  let asOf = null; // an ISO instant while the past is shown; null while live
  let latest = 0; // the last refresh asked for: only its answer is shown

  async function problem(response) {
    try {
      const body = await response.json();
      const first = Array.isArray(body.detail) ? body.detail[0] : null;
      return first && first.msg ? first.msg : "error " + response.status;
    } catch (err) {
      return "error " + response.status;
    }
  }

  async function refresh() {
    const wanted = asOf;
    const ticket = ++latest;
    const url = wanted === null ? panels : panels + "?as_of=" + encodeURIComponent(wanted);
    const response = await fetch(url, { headers });
    const body = response.ok ? await response.text() : await problem(response);
    if (ticket !== latest) {
      return; // a later refresh was asked for while this answer was on its way
    }
    if (!response.ok) {
      status.textContent = body;
      return;
    }
    document.getElementById("panels").innerHTML = body;
    status.textContent =
      wanted === null
        ? "updated " + new Date().toLocaleTimeString()
        : "as of " + new Date(wanted).toLocaleString();
  }

  async function poll() {
    if (asOf === null) {
      try {
        const response = await fetch(base + "/changes", { headers });
        if (response.ok) {
          const body = await response.json();
          if (body.marker !== marker) {
            marker = body.marker;
            await refresh();
          }
        } else {
          status.textContent = "error " + response.status;
        }
      } catch (err) {
        status.textContent = "offline";
      }
    }
    window.setTimeout(poll, 1000);
  }

  picker.addEventListener("change", function () {
    if (!picker.value) {
      return;
    }
    // datetime-local is the browser's local time, YYYY-MM-DDTHH:MM[:SS]; the API is asked
    // in UTC. Built from its parts, which every browser reads as local time.
    const [day, time] = picker.value.split("T");
    const [y, mo, d] = day.split("-").map(Number);
    const [h, mi, sec] = time.split(":").map(Number);
    const local = new Date(2000, mo - 1, d, h, mi, sec || 0);
    local.setFullYear(y); // the constructor reads years 0-99 as 1900-1999
    asOf = local.toISOString();
    live.disabled = false;
    refresh().catch(function () {
      status.textContent = "offline";
    });
  });
  live.addEventListener("click", function () {
    latest++; // an answer for the past still on its way is not shown
    asOf = null;
    marker = null; // the next poll renders the portfolio as it is now
    picker.value = "";
    live.disabled = true;
  });
  poll();
})();
