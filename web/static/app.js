// FleetWatch monitoring page. Plain browser JavaScript, Leaflet from /static/vendor.
// Data from the server (plates, notes, fence names...) only ever goes through
// textContent / DOM nodes, never innerHTML.
(function () {
  "use strict";

  var I18N = {
    zh: {
      title: "公务用车监控", username: "用户名", password: "密码", login: "登录", logout: "退出",
      tiles: "底图", none: "无底图", offline: "未连接", online: "已连接", alarmDesk: "报警处置",
      vehicles: "车辆", sound: "声音", searchPlate: "按车牌搜索", playback: "轨迹回放",
      play: "播放", pause: "暂停", handleAlarm: "处置报警", notePh: "处置情况（如：已电话联系驾驶员）",
      handledDone: "已处置完毕", ack: "确认", cancel: "取消", allKinds: "全部类型",
      allOrgs: "全部单位", authorised: "编制数", actual: "实有数", onlineN: "在线",
      movingN: "行驶", trips: "今日出车", alarmsToday: "今日报警", badLogin: "用户名或密码错误",
      tooMany: "登录失败次数过多，请稍后再试", acked: "已确认", handled: "已处置", by: "处置人",
      lastPos: "最后位置", time: "时间", speed: "速度", state: "状态", org: "单位",
      mileage: "今日里程", tripsV: "今日行程", openAlarms: "未结束报警", noTrack: "该时段无轨迹",
      more: "仅显示前 {n} 辆", started: "开始", ended: "结束", kmh: "公里/小时", km: "公里",
      moving: "行驶", parked: "停车", alarm: "报警",
      speeding: "超速", off_hours: "非工作时间用车", out_of_area: "越界", forbidden_zone: "进入禁入区域",
      parking_violation: "违规停放", terminal_alarm: "终端报警", fatigue: "疲劳驾驶",
      open: "进行中", closed: "已结束", close: "结束报警", flyTo: "定位", lang: "English"
    },
    en: {
      title: "Official Vehicle Monitoring", username: "User name", password: "Password", login: "Log in",
      logout: "Log out", tiles: "Base map", none: "No tiles", offline: "Disconnected",
      online: "Connected", alarmDesk: "Alarm desk", vehicles: "Vehicles", sound: "Sound",
      searchPlate: "Search by plate", playback: "Track playback", play: "Play", pause: "Pause",
      handleAlarm: "Handle alarm", notePh: "How it was handled", handledDone: "Handled and done",
      ack: "Acknowledge", cancel: "Cancel", allKinds: "All kinds", allOrgs: "All organisations",
      authorised: "Authorised", actual: "Actual", onlineN: "Online", movingN: "Moving",
      trips: "Trips today", alarmsToday: "Alarms today", badLogin: "Wrong user name or password",
      tooMany: "Too many failed logins, try again later", acked: "Acknowledged", handled: "Handled",
      by: "By", lastPos: "Last position", time: "Time", speed: "Speed", state: "State",
      org: "Organisation", mileage: "Mileage today", tripsV: "Trips today", openAlarms: "Open alarms",
      noTrack: "No track in this period", more: "Showing the first {n}", started: "Started",
      ended: "Ended", kmh: "km/h", km: "km", moving: "Moving", parked: "Parked", alarm: "In alarm",
      speeding: "Speeding", off_hours: "Off-hours use", out_of_area: "Out of area",
      forbidden_zone: "Forbidden zone", parking_violation: "Parking violation",
      terminal_alarm: "Terminal alarm", fatigue: "Fatigue", open: "open", closed: "closed",
      close: "Close alarm", flyTo: "Locate", lang: "中文"
    }
  };
  I18N.zh.offline_state = "离线"; I18N.en.offline_state = "Offline";
  var COLORS = { moving: "#2e7d32", parked: "#1565c0", offline: "#757575", alarm: "#c62828" };
  var LIST_LIMIT = 300;

  var S = {
    lang: localStorage.getItem("fw.lang") || null,
    token: sessionStorage.getItem("fw.token"),
    me: null, map: null, canvas: null, tileLayer: null, datum: "wgs84",
    vehicles: new Map(), alarms: new Map(), fences: [], fenceLayer: null,
    ws: null, lastSeq: null, retry: 0, blinkTimer: null,
    selected: null, track: null, trackLayer: null, play: null
  };

  function $(id) { return document.getElementById(id); }
  function t(key) { var d = I18N[S.lang || "zh"]; return d[key] != null ? d[key] : key; }
  function stateName(s) { return s === "offline" ? t("offline_state") : t(s); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text != null) { e.textContent = String(text); }
    return e;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  // Times are shown in the fleet's time zone (service.timezone), whatever the browser's is.
  function tzParts(ms) {
    var tz = (S.me && S.me.timezone) || "Asia/Shanghai";
    var f = new Intl.DateTimeFormat("en-CA", { timeZone: tz, hourCycle: "h23", year: "numeric",
      month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    var o = {};
    f.formatToParts(new Date(ms)).forEach(function (p) { o[p.type] = p.value; });
    return o;
  }
  function fmtTime(ms) {
    if (ms == null) { return "—"; }
    var o = tzParts(ms);
    return o.year + "-" + o.month + "-" + o.day + " " + o.hour + ":" + o.minute + ":" + o.second;
  }
  // Epoch ms of 00:00 of an ISO day (YYYY-MM-DD) in the fleet's time zone.
  function dayStartMs(iso) {
    var guess = Date.parse(iso + "T00:00:00Z");
    var o = tzParts(guess);
    var offset = Date.UTC(+o.year, +o.month - 1, +o.day, +o.hour, +o.minute, +o.second) - guess;
    return guess - offset;
  }

  function api(method, path, body) {
    var opts = { method: method, headers: {} };
    if (S.token) { opts.headers.Authorization = "Bearer " + S.token; }
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      if (r.status === 401 && path !== "/api/login") { logout(); throw new Error("unauthorized"); }
      return r.json().then(function (j) { if (!r.ok) { var e = new Error(j.error || r.status); e.status = r.status; throw e; } return j; });
    });
  }

  // -- language ------------------------------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = S.lang === "en" ? "en" : "zh-CN";
    document.querySelectorAll("[data-i18n]").forEach(function (n) { n.textContent = t(n.getAttribute("data-i18n")); });
    document.querySelectorAll("[data-i18n-ph]").forEach(function (n) { n.placeholder = t(n.getAttribute("data-i18n-ph")); });
    document.querySelectorAll(".lang-switch").forEach(function (n) { n.textContent = t("lang"); });
    if (S.me) { fillFilters(); renderAlarms(); renderVehicles(); loadBoard(); setConn(S.ws && S.ws.readyState === 1); }
  }
  document.querySelectorAll(".lang-switch").forEach(function (b) {
    b.addEventListener("click", function () {
      S.lang = (S.lang || "zh") === "zh" ? "en" : "zh";
      localStorage.setItem("fw.lang", S.lang);
      applyLang();
    });
  });

  // -- login ---------------------------------------------------------------------------------
  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    $("login-error").textContent = "";
    api("POST", "/api/login", { username: $("login-user").value, password: $("login-pass").value })
      .then(function (j) { S.token = j.token; sessionStorage.setItem("fw.token", j.token); start(); })
      .catch(function (e) { $("login-error").textContent = e.status === 429 ? t("tooMany") : t("badLogin"); });
  });
  $("logout").addEventListener("click", function () { api("POST", "/api/logout").catch(function () {}); logout(); });
  function logout() {
    S.token = null; sessionStorage.removeItem("fw.token");
    if (S.ws) { S.ws.onclose = null; S.ws.close(); S.ws = null; }
    location.reload();
  }

  function start() {
    api("GET", "/api/me").then(function (me) {
      S.me = me;
      if (!S.lang) { S.lang = me.language || "zh"; }
      $("login").classList.add("hidden");
      $("main").classList.remove("hidden");
      $("who").textContent = me.user.name + " · " + orgName(me.user.org);
      initMap();
      applyLang();
      connect();
      loadFences();
      loadBoard();
      setInterval(loadBoard, 30000);
      setInterval(renderVehicles, 2000);
    });
  }

  function orgName(id) {
    var o = S.me && S.me.orgs.find(function (x) { return x.id === id; });
    return o ? o.name : id;
  }
  function subtree(id) {
    var out = new Set([id]), grew = true;
    while (grew) {
      grew = false;
      S.me.orgs.forEach(function (o) { if (o.parent && out.has(o.parent) && !out.has(o.id)) { out.add(o.id); grew = true; } });
    }
    return out;
  }

  // -- map -----------------------------------------------------------------------------------
  function initMap() {
    S.canvas = L.canvas({ padding: 0.3 });
    S.map = L.map("map", { preferCanvas: true, renderer: S.canvas, zoomControl: true })
      .setView(S.me.center, S.me.zoom);
    S.fenceLayer = L.layerGroup().addTo(S.map);
    var sel = $("tile-select");
    clear(sel);
    S.me.tiles.forEach(function (tl, i) { var o = el("option", null, tl.name); o.value = String(i); sel.appendChild(o); });
    var none = el("option", null, t("none")); none.value = "none"; sel.appendChild(none);
    var saved = localStorage.getItem("fw.tiles");
    sel.value = saved && sel.querySelector('option[value="' + saved + '"]') ? saved : "0";
    sel.addEventListener("change", function () { localStorage.setItem("fw.tiles", sel.value); setTiles(sel.value); });
    setTiles(sel.value);
  }

  function setTiles(v) {
    if (S.tileLayer) { S.map.removeLayer(S.tileLayer); S.tileLayer = null; }
    var tl = v === "none" ? null : S.me.tiles[Number(v)];
    S.datum = tl ? tl.datum : "wgs84";
    if (tl && tl.url) {
      S.tileLayer = L.tileLayer(tl.url, { maxZoom: tl.max_zoom, subdomains: tl.subdomains || "abc", attribution: tl.attribution });
      S.tileLayer.addTo(S.map);
    }
    // re-project everything drawn for the new datum
    S.vehicles.forEach(function (v) { v.marker.setLatLng(disp(v.item.lat, v.item.lon)); });
    drawFences();
    if (S.track) { drawTrack(); }
  }

  // WGS-84 inside; GCJ-02 only for display on AMap-style tiles.
  function disp(lat, lon) {
    if (S.datum === "gcj02") { var g = FWDatum.wgs84ToGcj02(lon, lat); return [g[1], g[0]]; }
    return [lat, lon];
  }

  function tooltipFor(v) {
    return function () {
      var d = el("div");
      d.appendChild(el("b", null, v.item.plate));
      d.appendChild(el("div", null, stateName(v.item.state) + " · " + v.item.speed + " " + t("kmh")));
      return d;
    };
  }

  function upsertVehicle(item) {
    var v = S.vehicles.get(item.vehicle);
    if (!v) {
      v = { item: item, marker: null };
      v.marker = L.circleMarker(disp(item.lat, item.lon), {
        renderer: S.canvas, radius: 5, weight: 1, color: "#fff", fillColor: COLORS[item.state] || "#000", fillOpacity: 0.95
      });
      v.marker.bindTooltip(tooltipFor(v));
      v.marker.on("click", function () { showDetail(item.vehicle); });
      v.marker.addTo(S.map);
      S.vehicles.set(item.vehicle, v);
      return;
    }
    var was = v.item.state;
    v.item = item;
    v.marker.setLatLng(disp(item.lat, item.lon));
    if (was !== item.state) { v.marker.setStyle({ fillColor: COLORS[item.state] || "#000" }); }
  }

  // -- fences --------------------------------------------------------------------------------
  function loadFences() {
    api("GET", "/api/fences").then(function (fc) { S.fences = fc.features || []; drawFences(); }).catch(function () {});
  }
  function ringDisp(ring) { return ring.map(function (c) { return disp(c[1], c[0]); }); }
  function drawFences() {
    if (!S.fenceLayer) { return; }
    S.fenceLayer.clearLayers();
    S.fences.forEach(function (f) {
      var g = f.geometry; if (!g) { return; }
      var polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
      var color = { forbidden: "#c62828", allowed_region: "#1565c0", lot: "#2e7d32", speed_zone: "#ef6c00" }[f.properties.use] || "#555";
      polys.forEach(function (p) {
        var layer = L.polygon(p.map(ringDisp), { renderer: S.canvas, color: color, weight: 2, fillOpacity: 0.06, interactive: true });
        layer.bindTooltip(function () { return el("span", null, f.properties.name); });
        S.fenceLayer.addLayer(layer);
      });
    });
  }

  // -- live feed -----------------------------------------------------------------------------
  function setConn(up) {
    var c = $("conn"); c.textContent = up ? t("online") : t("offline");
    c.classList.toggle("up", !!up);
  }
  function connect() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var url = proto + "//" + location.host + "/ws/live?token=" + encodeURIComponent(S.token);
    if (S.lastSeq != null) { url += "&last_seq=" + S.lastSeq; }
    var ws = new WebSocket(url);
    S.ws = ws;
    ws.onopen = function () { S.retry = 0; setConn(true); };
    ws.onmessage = function (ev) { onFrame(JSON.parse(ev.data)); };
    ws.onclose = function (ev) {
      setConn(false);
      if (ev.code === 4401) { logout(); return; }
      S.retry = Math.min(S.retry + 1, 6);
      setTimeout(connect, 500 * Math.pow(2, S.retry - 1));
    };
  }
  function onFrame(f) {
    if (f.seq != null) { S.lastSeq = S.lastSeq == null ? f.seq : Math.max(S.lastSeq, f.seq); }
    if (f.type === "snapshot") {
      f.vehicles.forEach(upsertVehicle);
      S.alarms.clear();
      f.alarms.forEach(function (a) { S.alarms.set(a.id, a); });
      renderAlarms(); renderVehicles();
    } else if (f.type === "positions") {
      f.items.forEach(upsertVehicle);
    } else if (f.type === "alarm") {
      var a = f.alarm, known = S.alarms.has(a.id);
      if (a.state === "closed" && a.ack) { S.alarms.delete(a.id); } else { S.alarms.set(a.id, a); }
      renderAlarms();
      if (!known && a.state === "open" && !a.ack) { beep(); }
    }
  }

  // -- alarm desk ----------------------------------------------------------------------------
  function fillFilters() {
    var k = $("alarm-kind"), o = $("alarm-org"), kv = k.value, ov = o.value;
    clear(k); clear(o);
    var all = el("option", null, t("allKinds")); all.value = ""; k.appendChild(all);
    S.me.kinds.forEach(function (x) { var op = el("option", null, t(x)); op.value = x; k.appendChild(op); });
    var allo = el("option", null, t("allOrgs")); allo.value = ""; o.appendChild(allo);
    S.me.orgs.forEach(function (x) { var op = el("option", null, x.name); op.value = x.id; o.appendChild(op); });
    k.value = kv; o.value = ov;
  }
  $("alarm-kind").addEventListener("change", renderAlarms);
  $("alarm-org").addEventListener("change", renderAlarms);

  function renderAlarms() {
    var list = $("alarm-list"); clear(list);
    var kind = $("alarm-kind").value, org = $("alarm-org").value;
    var orgs = org ? subtree(org) : null;
    var items = Array.from(S.alarms.values()).filter(function (a) {
      return (!kind || a.kind === kind) && (!orgs || orgs.has(a.org));
    }).sort(function (a, b) { return b.started_at - a.started_at; });
    var unacked = 0;
    items.forEach(function (a) {
      var li = el("li", "alarm" + (a.state === "closed" ? " closed" : ""));
      li.dataset.id = a.id;
      if (!a.ack) { li.classList.add("unacked", "blink"); unacked++; }
      var head = el("div");
      head.appendChild(el("b", null, a.plate + " "));
      head.appendChild(el("span", null, t(a.kind) + " · " + t(a.state)));
      li.appendChild(head);
      li.appendChild(el("div", "meta", orgName(a.org) + " · " + t("started") + " " + fmtTime(a.started_at) +
        (a.ended_at ? " · " + t("ended") + " " + fmtTime(a.ended_at) : "")));
      if (a.ack) {
        li.appendChild(el("div", "meta ack-note", (a.ack.handled ? t("handled") : t("acked")) + " · " +
          t("by") + " " + a.ack.user + (a.ack.note ? " · " + a.ack.note : "")));
      }
      var actions = el("div", "actions");
      var fly = el("button", "link", t("flyTo"));
      fly.type = "button";
      fly.addEventListener("click", function (ev) { ev.stopPropagation(); flyToAlarm(a); });
      actions.appendChild(fly);
      if (S.me.user.role !== "viewer") {
        var ack = el("button", "link ack-btn", t("handleAlarm"));
        ack.type = "button";
        ack.addEventListener("click", function (ev) { ev.stopPropagation(); openAck(a); });
        actions.appendChild(ack);
      }
      li.appendChild(actions);
      li.addEventListener("click", function () { flyToAlarm(a); });
      list.appendChild(li);
    });
    $("alarm-badge").textContent = String(unacked);
  }

  function flyToAlarm(a) {
    var v = S.vehicles.get(a.vehicle);
    var ll = v ? disp(v.item.lat, v.item.lon) : disp(a.lat, a.lon);
    S.map.flyTo(ll, Math.max(S.map.getZoom(), 15), { duration: 0.6 });
    showDetail(a.vehicle);
  }

  var audioCtx = null;
  function beep() {
    if (!$("sound-on").checked) { return; }
    try {
      audioCtx = audioCtx || new (window.AudioContext || window.webkitAudioContext)();
      var o = audioCtx.createOscillator(), g = audioCtx.createGain();
      o.frequency.value = 880; g.gain.value = 0.15;
      o.connect(g); g.connect(audioCtx.destination);
      o.start(); o.stop(audioCtx.currentTime + 0.35);
    } catch (e) { /* no audio device: the blink remains */ }
  }
  // keep sounding every few seconds while something is unacknowledged
  setInterval(function () {
    if (!S.me) { return; }
    var any = false;
    S.alarms.forEach(function (a) { if (!a.ack && a.state === "open") { any = true; } });
    if (any) { beep(); }
  }, 5000);

  var ackTarget = null;
  function openAck(a) {
    ackTarget = a;
    $("ack-target").textContent = a.plate + " · " + t(a.kind) + " · " + fmtTime(a.started_at);
    $("ack-note").value = ""; $("ack-handled").checked = false;
    $("ack-dialog").classList.remove("hidden");
    $("ack-note").focus();
  }
  $("ack-cancel").addEventListener("click", function () { $("ack-dialog").classList.add("hidden"); });
  $("ack-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var a = ackTarget; if (!a) { return; }
    api("POST", "/api/alarms/" + encodeURIComponent(a.id) + "/ack", { note: $("ack-note").value, handled: $("ack-handled").checked })
      .then(function (j) {
        var cur = S.alarms.get(a.id);
        if (cur) { cur.ack = j.ack; if (cur.state === "closed") { S.alarms.delete(a.id); } }
        $("ack-dialog").classList.add("hidden");
        renderAlarms();
      })
      .catch(function (e) { alert(e.message); });
  });

  // -- vehicle list --------------------------------------------------------------------------
  $("plate-search").addEventListener("input", renderVehicles);
  document.querySelectorAll(".tabs button").forEach(function (b) {
    b.addEventListener("click", function () {
      document.querySelectorAll(".tabs button").forEach(function (x) { x.classList.toggle("active", x === b); });
      $("tab-alarms").classList.toggle("hidden", b.dataset.tab !== "alarms");
      $("tab-vehicles").classList.toggle("hidden", b.dataset.tab !== "vehicles");
      renderVehicles();
    });
  });

  function renderVehicles() {
    if (!S.me) { return; }
    var counts = { moving: 0, parked: 0, offline: 0, alarm: 0 };
    S.vehicles.forEach(function (v) { counts[v.item.state] = (counts[v.item.state] || 0) + 1; });
    var c = $("state-counts"); clear(c);
    Object.keys(counts).forEach(function (s) { c.appendChild(el("span", "st-" + s, stateName(s) + " " + counts[s])); });
    if ($("tab-vehicles").classList.contains("hidden")) { return; }
    var q = $("plate-search").value.trim().toUpperCase();
    var list = $("vehicle-list"); clear(list);
    var n = 0;
    S.vehicles.forEach(function (v) {
      if (q && v.item.plate.toUpperCase().indexOf(q) < 0) { return; }
      n++;
      if (n > LIST_LIMIT) { return; }
      var li = el("li", "vehicle");
      li.appendChild(el("span", "badge st-" + v.item.state, stateName(v.item.state)));
      li.appendChild(el("b", null, " " + v.item.plate + " "));
      li.appendChild(el("span", "meta", orgName(v.item.org) + " · " + v.item.speed + " " + t("kmh")));
      li.addEventListener("click", function () {
        S.map.flyTo(disp(v.item.lat, v.item.lon), Math.max(S.map.getZoom(), 15), { duration: 0.6 });
        showDetail(v.item.vehicle);
      });
      list.appendChild(li);
    });
    if (n > LIST_LIMIT) { list.appendChild(el("li", "meta", t("more").replace("{n}", LIST_LIMIT))); }
  }

  // -- vehicle detail ------------------------------------------------------------------------
  function showDetail(id) {
    S.selected = id;
    api("GET", "/api/vehicles/" + encodeURIComponent(id)).then(function (d) {
      $("detail").classList.remove("hidden");
      $("detail-plate").textContent = d.plate;
      var dl = $("detail-body"); clear(dl);
      function row(k, v) { dl.appendChild(el("dt", null, t(k))); dl.appendChild(el("dd", null, v)); }
      row("org", orgName(d.org));
      row("state", stateName(d.state));
      if (d.last) {
        row("time", fmtTime(d.last.ts));
        row("speed", d.last.speed + " " + t("kmh"));
        row("lastPos", d.last.lat.toFixed(5) + ", " + d.last.lon.toFixed(5));
      }
      if (d.today) { row("mileage", d.today.mileage_km + " " + t("km")); row("tripsV", String(d.today.trips)); }
      var ul = $("detail-alarms"); clear(ul);
      d.alarms.forEach(function (a) { ul.appendChild(el("li", null, t(a.kind) + " · " + fmtTime(a.started_at))); });
      if (!$("playback-day").value) { $("playback-day").value = isoDay(new Date()); }
    });
  }
  function isoDay(d) { var o = tzParts(d.getTime()); return o.year + "-" + o.month + "-" + o.day; }
  document.querySelectorAll("[data-close]").forEach(function (b) {
    b.addEventListener("click", function () {
      $(b.dataset.close).classList.add("hidden");
      if (b.dataset.close === "playback") { stopTrack(); }
    });
  });

  // -- track playback ------------------------------------------------------------------------
  $("playback-load").addEventListener("click", function () {
    if (!S.selected) { return; }
    var dayIso = $("playback-day").value || isoDay(new Date());
    var from = dayStartMs(dayIso), to = from + 86400000;
    api("GET", "/api/vehicles/" + encodeURIComponent(S.selected) + "/track?from=" + from + "&to=" + to + "&simplify_m=2")
      .then(function (tr) {
        stopTrack();
        S.track = tr;
        $("playback").classList.remove("hidden");
        var v = S.vehicles.get(tr.vehicle);
        $("playback-title").textContent = (v ? v.item.plate : tr.vehicle) + " · " + dayIso +
          (tr.points.ts.length ? "" : " · " + t("noTrack"));
        drawTrack();
        if (tr.points.ts.length) { S.map.fitBounds(S.trackLayer.getBounds(), { padding: [40, 40] }); }
      });
  });

  function drawTrack() {
    if (S.trackLayer) { S.map.removeLayer(S.trackLayer); }
    var tr = S.track, p = tr.points;
    var lls = p.ts.map(function (_, i) { return disp(p.lat[i], p.lon[i]); });
    S.trackLayer = L.featureGroup();
    S.trackLayer.addLayer(L.polyline(lls, { renderer: S.canvas, color: "#6a1b9a", weight: 3, className: "track-line" }));
    tr.alarms.forEach(function (a) {
      var m = L.circleMarker(disp(a.lat, a.lon), { renderer: S.canvas, radius: 7, color: "#c62828", fillOpacity: 0.5 });
      m.bindTooltip(function () { return el("span", null, t(a.kind) + " · " + fmtTime(a.started_at)); });
      S.trackLayer.addLayer(m);
    });
    if (lls.length) {
      S.play = S.play || { i: 0, t: p.ts[0], running: false, last: 0 };
      S.play.marker = L.circleMarker(lls[0], { renderer: S.canvas, radius: 8, color: "#000", fillColor: "#ffeb3b", fillOpacity: 1 });
      S.trackLayer.addLayer(S.play.marker);
    }
    S.trackLayer.addTo(S.map);
    drawChart();
  }

  function stopTrack() {
    if (S.play) { S.play.running = false; }
    S.play = null;
    if (S.trackLayer) { S.map.removeLayer(S.trackLayer); S.trackLayer = null; }
    S.track = null;
    $("play").textContent = t("play");
  }

  function drawChart() {
    var cv = $("speed-chart"), ctx = cv.getContext("2d");
    var w = cv.width = cv.clientWidth || 900, h = cv.height = 140;
    ctx.clearRect(0, 0, w, h);
    var tr = S.track; if (!tr) { return; }
    var p = tr.points, n = p.ts.length;
    ctx.strokeStyle = "#ccd"; ctx.fillStyle = "#667"; ctx.font = "11px sans-serif";
    var vmax = 20; p.speed.forEach(function (s) { if (s > vmax) { vmax = s; } });
    vmax = Math.ceil(vmax / 20) * 20;
    var pad = 30, x0 = tr.from, x1 = tr.to;
    function X(ts) { return pad + (ts - x0) / (x1 - x0) * (w - pad - 6); }
    function Y(s) { return h - 16 - s / vmax * (h - 24); }
    for (var g = 0; g <= vmax; g += vmax / 4) {
      ctx.beginPath(); ctx.moveTo(pad, Y(g)); ctx.lineTo(w - 6, Y(g)); ctx.stroke();
      ctx.fillText(String(Math.round(g)), 2, Y(g) + 4);
    }
    for (var hr = 0; hr <= 24; hr += 3) { ctx.fillText(hr + ":00", X(x0 + hr * 3600000) - 12, h - 2); }
    if (n) {
      ctx.strokeStyle = "#1565c0"; ctx.lineWidth = 1.5; ctx.beginPath();
      for (var i = 0; i < n; i++) { if (i) { ctx.lineTo(X(p.ts[i]), Y(p.speed[i])); } else { ctx.moveTo(X(p.ts[i]), Y(p.speed[i])); } }
      ctx.stroke();
      ctx.fillStyle = "#c62828";
      tr.alarms.forEach(function (a) { ctx.fillRect(X(a.started_at) - 1, 4, 3, h - 20); });
      if (S.play) {
        ctx.strokeStyle = "#000"; ctx.beginPath(); ctx.moveTo(X(S.play.t), 4); ctx.lineTo(X(S.play.t), h - 16); ctx.stroke();
      }
    }
    cv.dataset.points = String(n);
  }

  $("speed-chart").addEventListener("click", function (ev) {
    if (!S.track || !S.play) { return; }
    var cv = ev.target, r = cv.getBoundingClientRect(), pad = 30;
    var frac = (ev.clientX - r.left - pad) / (r.width - pad - 6);
    S.play.t = S.track.from + Math.max(0, Math.min(1, frac)) * (S.track.to - S.track.from);
    placePlayMarker();
  });

  function placePlayMarker() {
    var p = S.track.points, n = p.ts.length, tt = S.play.t;
    var i = 0; while (i < n - 1 && p.ts[i + 1] <= tt) { i++; }
    var lat = p.lat[i], lon = p.lon[i];
    if (i < n - 1 && tt > p.ts[i]) {
      var f = (tt - p.ts[i]) / (p.ts[i + 1] - p.ts[i]);
      lat += (p.lat[i + 1] - lat) * f; lon += (p.lon[i + 1] - lon) * f;
    }
    S.play.marker.setLatLng(disp(lat, lon));
    $("play-time").textContent = fmtTime(tt) + " · " + p.speed[i] + " " + t("kmh");
    drawChart();
  }

  $("play").addEventListener("click", function () {
    if (!S.play || !S.track || !S.track.points.ts.length) { return; }
    S.play.running = !S.play.running;
    $("play").textContent = S.play.running ? t("pause") : t("play");
    var p = S.track.points;
    if (S.play.t >= p.ts[p.ts.length - 1]) { S.play.t = p.ts[0]; }
    S.play.last = performance.now();
    function step(now) {
      if (!S.play || !S.play.running) { return; }
      var mult = Number($("play-speed").value);
      S.play.t += (now - S.play.last) * mult; S.play.last = now;
      var end = p.ts[p.ts.length - 1];
      if (S.play.t >= end) { S.play.t = end; S.play.running = false; $("play").textContent = t("play"); }
      placePlayMarker();
      requestAnimationFrame(step);
    }
    requestAnimationFrame(step);
  });

  // -- the board -----------------------------------------------------------------------------
  function loadBoard() {
    api("GET", "/api/stats").then(function (s) {
      var b = $("board"); clear(b);
      function stat(k, v) { var d = el("span", "stat", t(k)); d.appendChild(el("b", null, v == null ? "—" : v)); b.appendChild(d); }
      stat("authorised", s.authorised); stat("actual", s.actual); stat("onlineN", s.online);
      stat("movingN", s.moving); stat("trips", s.trips);
      var kinds = Object.keys(s.alarms_by_kind || {});
      stat("alarmsToday", kinds.length ? kinds.map(function (k) { return t(k) + " " + s.alarms_by_kind[k]; }).join(" · ") : "0");
    }).catch(function () {});
  }

  // For tests and operators' consoles.
  window.fw = {
    state: S,
    markerCount: function () { return S.vehicles.size; },
    alarmIds: function () { return Array.from(S.alarms.keys()); }
  };

  applyLang();
  if (S.token) { start(); }
})();
