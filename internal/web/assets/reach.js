// reach.js: the invite page's reachability check, its reveal and its
// confirmation (see reach.go and invite.go).
//
// From the visitor's own network, with WebRTC, it tests which of the
// server's paths get through:
//   - UDP to each WireGuard port: a peer connection whose only ICE server is
//     stun:HOST:PORT (every tariq WireGuard port answers STUN Binding); a
//     server-reflexive candidate means UDP got there and back;
//   - TURN over TCP and over TLS on the HTTPS port: a relay-only peer
//     connection; a relay candidate means an allocation succeeded;
//   - TURN over UDP, and whether UDP stays usable: two relay-only peer
//     connections through turn:...?transport=udp place a call with each
//     other and send a voice-like stream (50 small packets a second) over an
//     unreliable data channel; most of it must arrive;
//   - the Outline app's path: a WebSocket over TLS to this same HTTPS port
//     (the link's own probe path), opened and closed at once.
// It posts what it found to the server (same origin), which records it for
// the sysadmin and answers with the advice; the page then shows it, and
// points the reveal at the form advised.
//
// The page carries no settings: the member's "show my settings" posts the
// reveal form (which uses the link up). This script posts it with fetch and
// shows the answer (the QR code and the download, as data: URLs) in this
// page, so the advice and the confirmation carry on; without it, or if the
// fetch fails, the form posts itself and the server answers a page.
//
// Then it confirms: a port check cannot see a network that drops
// WireGuard's handshake, but the server sees whether one arrived. Once the
// member has the settings (revealed; then downloaded or scanned, and "I
// have switched it on" pressed), the page polls /join/TOKEN/connected; a
// countdown started by that button gives the handshake data.confirmMs.
// Connected: it says so. Not connected: it offers the AmneziaWG form
// (data.switch: a reveal of it, which the link allows once more for this),
// or, with the Outline key on offer (data.outline) and its WebSocket not
// found blocked, the Outline key (a reveal of form=outline, once too),
// or says to try another network. A poll that gets no answer counts as not
// connected: a tunnel that is on but blocked swallows the page's own
// requests too.
'use strict';

(() => {
  const dataEl = document.getElementById('reach-data');
  if (!dataEl) {
    return;
  }
  const data = JSON.parse(dataEl.textContent);
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', main); // the script sits above the download and the confirmation
  } else {
    main();
  }

  function main() {
    const confirm = confirmer();
    const revealForm = document.getElementById('reveal');
    if (revealForm) {
      onReveal(revealForm, (answer) => {
        const el = (id) => document.getElementById(id);
        // The links to the page in another language or for another
        // device would open it used: they go, and the note says so.
        for (const id of ['reveal', 'langs', 'platforms', 'once']) {
          el(id).hidden = true;
        }
        el('revealed').hidden = false;
        if (answer.key) {
          showOutline(answer);
        } else {
          el('download').href = answer.download;
          el('download').hidden = false;
          el('qr').src = answer.qr;
          el('qr').hidden = false;
          el('scan-hint').hidden = false;
        }
        confirm.revealed(answer.form);
      });
    }
    const section = document.getElementById('reach');
    if (!section || typeof RTCPeerConnection !== 'function') {
      return; // no WebRTC: no check, but the reveal and the confirmation work
    }
    section.hidden = false;

    const typeOf = (c) => c.type || ((/ typ (\w+)/.exec(c.candidate) || [])[1]);

    // gather resolves true once the one ICE server in server yields a
    // candidate of type want, false when it cannot within data.timeoutMs.
    function gather(server, policy, want) {
      return new Promise((resolve) => {
        let pc;
        try {
          pc = new RTCPeerConnection({iceServers: [server], iceTransportPolicy: policy});
        } catch (e) {
          resolve(false);
          return;
        }
        let host = false;
        let errored = false;
        let done = false;
        const finish = (ok) => {
          if (done) {
            return;
          }
          done = true;
          clearTimeout(timer);
          pc.close();
          resolve(ok);
        };
        const timer = setTimeout(() => finish(false), data.timeoutMs);
        pc.onicecandidateerror = () => { errored = true; };
        pc.onicecandidate = (e) => {
          if (!e.candidate) {
            // Gathering ended. A STUN answer carrying the visitor's own
            // address (no NAT in between) yields no separate
            // server-reflexive candidate: an answered server raised no error.
            finish(want === 'srflx' && host && !errored);
            return;
          }
          const type = typeOf(e.candidate);
          if (type === 'host') {
            host = true;
          }
          if (type === want) {
            finish(true);
          }
        };
        pc.createDataChannel('probe');
        pc.setLocalDescription().catch(() => finish(false));
      });
    }

    // stream places a relay-only call between two peer connections through
    // server and sends a voice-like stream from one to the other. It resolves
    // {relay: a relay candidate was gathered, sustained: most of the stream
    // arrived (undefined if the call never connected far enough to try)}.
    function stream(server) {
      return new Promise((resolve) => {
        const config = {iceServers: [server], iceTransportPolicy: 'relay'};
        let pc1;
        let pc2;
        try {
          pc1 = new RTCPeerConnection(config);
          pc2 = new RTCPeerConnection(config);
        } catch (e) {
          resolve({relay: false});
          return;
        }
        const result = {relay: false};
        let done = false;
        const timers = [];
        const finish = () => {
          if (done) {
            return;
          }
          done = true;
          timers.forEach(clearTimeout);
          pc1.close();
          pc2.close();
          resolve(result);
        };
        const setup = setTimeout(finish, data.timeoutMs);
        timers.push(setup);
        for (const [pc, other] of [[pc1, pc2], [pc2, pc1]]) {
          pc.onicecandidate = (e) => {
            if (e.candidate) {
              if (typeOf(e.candidate) === 'relay') {
                result.relay = true;
              }
              other.addIceCandidate(e.candidate).catch(() => {});
            }
          };
        }
        const voice = pc1.createDataChannel('voice', {ordered: false, maxRetransmits: 0});
        const perSecond = 50;
        const total = Math.round(data.streamMs / 1000 * perSecond);
        let received = 0;
        pc2.ondatachannel = (e) => {
          e.channel.onmessage = () => { received++; };
        };
        voice.onopen = () => {
          // The call is up: a new deadline covers the stream.
          clearTimeout(setup);
          timers.push(setTimeout(finish, data.streamMs + 2000));
          const payload = new Uint8Array(160); // 20 ms of a narrowband voice codec
          let sent = 0;
          const tick = setInterval(() => {
            if (done || voice.readyState !== 'open') {
              clearInterval(tick);
              return;
            }
            voice.send(payload);
            if (++sent >= total) {
              clearInterval(tick);
              // Give the last packets a second to arrive.
              timers.push(setTimeout(() => {
                result.sustained = received >= 0.8 * total;
                finish();
              }, 1000));
            }
          }, 1000 / perSecond);
        };
        (async () => {
          await pc1.setLocalDescription();
          await pc2.setRemoteDescription(pc1.localDescription);
          await pc2.setLocalDescription();
          await pc1.setRemoteDescription(pc2.localDescription);
        })().catch(finish);
      });
    }

    // wsProbe resolves whether a WebSocket to url opens within
    // data.timeoutMs; it closes it at once (the server answers the close).
    function wsProbe(url) {
      return new Promise((resolve) => {
        let ws;
        try {
          ws = new WebSocket(url);
        } catch (e) {
          resolve(false);
          return;
        }
        let done = false;
        const finish = (ok) => {
          if (done) {
            return;
          }
          done = true;
          clearTimeout(timer);
          resolve(ok);
        };
        const timer = setTimeout(() => {
          finish(false);
          ws.close();
        }, data.timeoutMs);
        ws.onopen = () => {
          finish(true);
          ws.close(1000);
        };
        ws.onerror = () => finish(false);
        ws.onclose = () => finish(false);
      });
    }

    // The TURN probes' short-lived credentials come by POST, so that no
    // GET of the page (a link preview) carries them.
    async function turnCreds() {
      if (!data.creds) {
        return null;
      }
      try {
        const resp = await fetch(data.creds, {
          method: 'POST', headers: {'Accept': 'application/json'}, credentials: 'omit', cache: 'no-store',
        });
        return resp.ok ? await resp.json() : null;
      } catch (e) {
        return null;
      }
    }

    async function run() {
      const results = {};
      const creds = await turnCreds();
      const turnServer = (url) => ({urls: url, username: creds.username, credential: creds.credential});
      const jobs = [];
      for (const p of data.stun || []) {
        jobs.push(gather({urls: p.url}, 'all', 'srflx').then((ok) => { results[p.id] = ok; }));
      }
      for (const p of (creds ? data.turn : null) || []) {
        jobs.push(gather(turnServer(p.url), 'relay', 'relay').then((ok) => { results[p.id] = ok; }));
      }
      if (data.ws) {
        jobs.push(wsProbe('wss://' + location.host + data.ws.url).then((ok) => { results[data.ws.id] = ok; }));
      }
      if (data.stream && creds) {
        jobs.push(stream(turnServer(data.stream.url)).then((r) => {
          results[data.stream.id] = r.relay;
          if (r.relay && r.sustained !== undefined) {
            results['udp-sustained'] = r.sustained;
          } else if (r.relay) {
            results['udp-sustained'] = false; // allocated, but no call got through
          }
        }));
      }
      await Promise.all(jobs);
      const reached = Object.keys(results).filter((k) => results[k]);
      const failed = Object.keys(results).filter((k) => !results[k]);

      let answer = null;
      try {
        const resp = await fetch(data.post, {
          method: 'POST',
          headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({reached, failed}),
          credentials: 'omit',
          cache: 'no-store',
        });
        if (resp.ok) {
          answer = await resp.json();
        }
      } catch (e) {
        answer = null;
      }
      show(results, answer);
    }

    function show(results, answer) {
      document.getElementById('reach-running').hidden = true;
      const usable = new Set(answer ? answer.usable : Object.keys(results).filter((k) => results[k]));
      for (const li of document.querySelectorAll('#reach-list li')) {
        const id = li.dataset.path;
        if (!(id in results)) {
          li.hidden = true; // not tested (the UDP stream needs a relayed call first)
          continue;
        }
        const ok = usable.has(id);
        li.dataset.ok = String(ok);
        li.querySelector('.mark').textContent = ok ? '✓' : '✗';
      }
      if (!answer) {
        section.dataset.state = 'error';
        document.getElementById('verdict-error').hidden = false;
        return;
      }
      section.dataset.state = 'done';
      section.dataset.verdict = answer.verdict;
      const v = document.getElementById('verdict-' + answer.verdict);
      if (v) {
        v.hidden = false;
      }
      if (answer.form && answer.form !== data.own) {
        useForm(answer.form);
      }
      const awg = (data.stun || []).find((p) => p.id.startsWith('awg-'));
      confirm.checked(!!awg && usable.has(awg.id), data.ws ? usable.has(data.ws.id) : null);
    }

    // useForm points the reveal at another form of the settings (same
    // keys): "amneziawg-PORT" or "wireguard-PORT". Settings already
    // revealed stay as they are: the link gave them out.
    function useForm(key) {
      const [form, port] = key.split('-');
      if (revealForm && !revealForm.hidden) {
        revealForm.elements.form.value = form;
        revealForm.elements.port.value = form === 'wireguard' ? port : '';
        if (form === 'outline') {
          outlineSteps();
        }
      }
      section.dataset.form = key;
    }

    run();
  }

  // outlineSteps replaces the WireGuard steps with the Outline app's.
  function outlineSteps() {
    const el = (id) => document.getElementById(id);
    el('steps').hidden = true;
    for (const id of ['outline-steps', 'outline-stores']) {
      if (el(id)) {
        el(id).hidden = false;
      }
    }
  }

  // showOutline shows a revealed Outline key (answer.key, an ssconf://
  // link, and its QR code): "Add to Outline" opens it in the app, the
  // copy button puts it on the clipboard.
  function showOutline(answer) {
    const el = (id) => document.getElementById(id);
    outlineSteps();
    for (const id of ['download', 'scan-hint']) {
      el(id).hidden = true;
    }
    el('outline-add').href = answer.key;
    el('outline-key').value = answer.key;
    el('outline-box').hidden = false;
    el('qr').src = answer.qr;
    el('qr').hidden = false;
    el('outline-scan-hint').hidden = false;
    const copy = el('outline-copy');
    copy.hidden = false;
    copy.onclick = async () => {
      try {
        await navigator.clipboard.writeText(answer.key);
      } catch (e) {
        el('outline-key').select(); // the member copies it by hand
        return;
      }
      el('outline-copied').hidden = false;
    };
  }

  // onReveal makes form (a reveal: the member's deliberate step, which
  // uses the link up) post with fetch and hand the answer (form, qr,
  // download: data: URLs) to show. An answer other than the settings (the
  // link was used, expired, too many tries) gets the form posted the plain
  // way, whose answer is the server's page saying so; so does a failed
  // fetch, unless retry says to let the member try again.
  function onReveal(form, show, retry) {
    const button = form.querySelector('button');
    form.addEventListener('submit', async (e) => {
      if (typeof fetch !== 'function' || typeof URLSearchParams !== 'function') {
        return; // the plain post
      }
      e.preventDefault();
      button.disabled = true;
      let resp;
      try {
        resp = await fetch(form.action, {
          method: 'POST',
          headers: {'Accept': 'application/json'},
          body: new URLSearchParams(new FormData(form)),
          credentials: 'omit',
          cache: 'no-store',
        });
      } catch (err) {
        if (retry) {
          button.disabled = false;
          retry();
          return;
        }
        form.submit();
        return;
      }
      let answer = null;
      try {
        answer = await resp.json();
      } catch (err) {
        answer = null;
      }
      if (!resp.ok || !answer || !(answer.download || answer.key)) {
        form.submit();
        return;
      }
      show(answer);
    });
  }

  // confirmer drives the confirmation in the #confirm section, whose
  // data-state is one of idle (not shown yet: nothing revealed), ask
  // (switch it on, then press the button), waiting (the countdown),
  // connected, switch (the AmneziaWG form offered: its reveal, then its
  // QR code and download) and blocked (try another network).
  function confirmer() {
    const box = document.getElementById('confirm');
    const el = (id) => document.getElementById(id);
    if (!box || !data.connected || typeof fetch !== 'function') {
      return {revealed() {}, checked() {}};
    }
    let form = data.own; // the form of the settings the member took
    let switched = false; // the AmneziaWG form was revealed
    let connected = false;
    let pollUntil = 0;
    let poller = null;
    let asking = false;
    let countdown = null;
    let awgReached = null; // whether the check reached the AmneziaWG port; null: no check
    let wsReached = null; // whether the check's WebSocket got through; null: not tested

    function state(s) {
      box.hidden = false;
      box.dataset.state = s;
      for (const p of ['ask', 'waiting', 'connected', 'switch', 'blocked']) {
        el('confirm-' + p).hidden = p !== s;
      }
      if (el('confirm-amneziawg')) {
        el('confirm-amneziawg').hidden = s !== 'switch';
      }
      if (el('confirm-outline')) {
        el('confirm-outline').hidden = s !== 'outline';
      }
      el('confirm-button').hidden = s !== 'ask' && !((s === 'switch' || s === 'outline') && switched);
    }

    // ask resolves whether the server has seen the device connect; no
    // answer within data.pollMs is a no.
    async function ask() {
      const ctl = typeof AbortController === 'function' ? new AbortController() : null;
      const timer = ctl ? setTimeout(() => ctl.abort(), data.pollMs) : 0;
      try {
        const resp = await fetch(data.connected, {
          cache: 'no-store', credentials: 'omit', signal: ctl ? ctl.signal : undefined,
        });
        return resp.ok && (await resp.json()).connected === true;
      } catch (e) {
        return false;
      } finally {
        clearTimeout(timer);
      }
    }

    async function tick() {
      if (connected || asking) {
        return;
      }
      if (Date.now() > pollUntil) {
        clearInterval(poller);
        poller = null;
        return;
      }
      asking = true;
      const ok = await ask();
      asking = false;
      if (ok && !connected) {
        connected = true;
        clearInterval(poller);
        clearInterval(countdown);
        state('connected');
      }
    }

    // poll asks the server every data.pollMs for at least ms more.
    function poll(ms) {
      pollUntil = Math.max(pollUntil, Date.now() + ms);
      if (!poller) {
        poller = setInterval(tick, data.pollMs);
      }
      tick();
    }

    // start: "I have switched it on". The client's first handshake goes at
    // once: data.confirmMs without one means it does not get through.
    function start() {
      let left = Math.round(data.confirmMs / 1000);
      state('waiting');
      el('confirm-count').textContent = String(left);
      poll(data.confirmMs);
      clearInterval(countdown);
      countdown = setInterval(() => {
        if (connected) {
          clearInterval(countdown);
          return;
        }
        left--;
        el('confirm-count').textContent = String(left);
        if (left <= 0) {
          clearInterval(countdown);
          giveUp();
        }
      }, 1000);
    }

    // giveUp: no handshake. Stock WireGuard, with the AmneziaWG form on
    // offer and its port not found blocked by the check: offer it (the old
    // download and QR code go, they do not work here); else nothing more
    // this page can hand out.
    //
    // Without the AmneziaWG form, the Outline key if on offer and its
    // WebSocket was not found blocked: TCP on the web port.
    function giveUp() {
      const hide = () => {
        for (const id of ['steps', 'download', 'qr', 'scan-hint']) {
          if (el(id)) {
            el(id).hidden = true;
          }
        }
      };
      if (data.switch && awgReached !== false && !form.startsWith('amneziawg-') && !switched) {
        hide();
        state('switch');
      } else if (data.outline && wsReached !== false && form !== 'outline' && !switched && el('reveal-outline')) {
        hide();
        state('outline');
      } else {
        state('blocked');
      }
    }

    if (el('reveal-amneziawg')) {
      // The switch's reveal; a failed fetch (the blocked tunnel still on
      // takes the page's requests) leaves the button for another try.
      onReveal(el('reveal-amneziawg'), (answer) => {
        el('reveal-amneziawg').hidden = true;
        el('download-amneziawg').href = answer.download;
        el('download-amneziawg').hidden = false;
        el('qr-amneziawg').src = answer.qr;
        el('qr-amneziawg').hidden = false;
        form = answer.form;
        switched = true;
        state('switch');
        poll(10 * 60 * 1000);
      }, () => {});
    }
    if (el('reveal-outline')) {
      // The switch to the Outline key, as above.
      onReveal(el('reveal-outline'), (answer) => {
        el('reveal-outline').hidden = true;
        showOutline(answer);
        form = answer.form;
        switched = true;
        state('outline');
        poll(10 * 60 * 1000);
      }, () => {});
    }
    el('confirm-button').addEventListener('click', start);
    return {
      // revealed: the member has the settings in form key. Importing them
      // takes a while: ask her to say when the connection is on, and
      // meanwhile listen for it anyway.
      revealed(key) {
        form = key;
        if (!connected) {
          state('ask');
          poll(10 * 60 * 1000);
        }
      },
      // checked: whether the check reached the AmneziaWG port, and its
      // WebSocket got through (null: not tested).
      checked(reached, ws) {
        awgReached = reached;
        wsReached = ws;
      },
    };
  }
})();
