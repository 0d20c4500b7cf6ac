// pmo dashboard: fetch the server-rendered panels, then refresh them whenever the portfolio's
// change marker moves. No framework, no external assets.
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
  const base = "/api/v1/portfolios/" + encodeURIComponent(portfolio);
  let marker = null;

  async function refresh() {
    const response = await fetch("/dashboard/" + encodeURIComponent(portfolio) + "/panels", { headers });
    if (!response.ok) {
      status.textContent = "error " + response.status;
      return;
    }
    document.getElementById("panels").innerHTML = await response.text();
    status.textContent = "updated " + new Date().toLocaleTimeString();
  }

  async function poll() {
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
    window.setTimeout(poll, 1000);
  }
  poll();
})();
