// reach.js: the invite page's reachability check (see reach.go).
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
//     unreliable data channel; most of it must arrive.
// It posts what it found to the server (same origin), which records it for
// the sysadmin and answers with the advice; the page then shows it, and
// switches the download and QR code to the form advised.
'use strict';

(() => {
  const dataEl = document.getElementById('reach-data');
  const section = document.getElementById('reach');
  if (!dataEl || !section || typeof RTCPeerConnection !== 'function') {
    return; // no WebRTC: the page stays as it is
  }
  const data = JSON.parse(dataEl.textContent);
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

  async function run() {
    const results = {};
    const turnServer = (url) => ({urls: url, username: data.username, credential: data.credential});
    const jobs = [];
    for (const p of data.stun || []) {
      jobs.push(gather({urls: p.url}, 'all', 'srflx').then((ok) => { results[p.id] = ok; }));
    }
    for (const p of data.turn || []) {
      jobs.push(gather(turnServer(p.url), 'relay', 'relay').then((ok) => { results[p.id] = ok; }));
    }
    if (data.stream) {
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
    const awg = (data.stun || []).find((p) => p.id.startsWith('awg-'));
    if (answer.verdict === 'wireguard' && awg && usable.has(awg.id)) {
      document.getElementById('verdict-wireguard-fallback').hidden = false;
    }
    if (answer.form && answer.form !== data.own) {
      useForm(answer.form);
    }
  }

  // useForm points the download button and the QR code at another form of
  // the settings (same keys): "amneziawg-PORT" or "wireguard-PORT".
  function useForm(key) {
    const [form, port] = key.split('-');
    const btn = document.getElementById('download');
    if (btn) {
      const u = new URL(btn.href);
      u.searchParams.set('form', form);
      if (form === 'wireguard') {
        u.searchParams.set('port', port);
      } else {
        u.searchParams.delete('port');
      }
      btn.href = u.toString();
    }
    const qr = document.getElementById('qr');
    if (qr && data.qr && data.qr[key]) {
      qr.src = data.qr[key];
    } else if (qr) {
      qr.hidden = true; // never show a code for settings other than the download's
    }
    section.dataset.form = key;
  }

  run();
})();
