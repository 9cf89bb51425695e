// The webgear-rtc player. It speaks WebGear_RTC's protocol: a recvonly video transceiver,
// complete ICE gathering, one JSON offer/answer exchange with POST offer, and
// POST close_connection when the page goes away. It shows the connection state and
// reconnects by itself when the stream or the network drops. The server's ICE servers
// (STUN/TURN) and transport policy come from the page's data-rtc-configuration.
// window.webgearRtc.peer is the current RTCPeerConnection, for pages that show its stats.
(() => {
  "use strict";
  const root = document.body.dataset.root || "";
  let configuration = {};
  try {
    configuration = JSON.parse(document.body.dataset.rtcConfiguration || "{}");
  } catch (error) {
    console.warn("webgear-rtc: ignoring an unreadable data-rtc-configuration: " + error);
  }
  const video = document.getElementById("video");
  const state = document.getElementById("state");
  let pc = null;
  window.webgearRtc = {
    get peer() {
      return pc;
    },
  };
  let attempt = 0;
  let lastProgress = -1;
  let stalledSeconds = 0;

  function show(name, text) {
    if (!state) return;
    state.dataset.state = name;
    state.textContent = text;
  }

  function waitForGathering(peer) {
    return new Promise((resolve) => {
      if (peer.iceGatheringState === "complete") return resolve();
      const done = () => {
        if (peer.iceGatheringState === "complete") {
          peer.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      peer.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);
    });
  }

  async function connect() {
    const peer = new RTCPeerConnection(configuration);
    pc = peer;
    show(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting…" : "connecting…");
    peer.addTransceiver("video", { direction: "recvonly" });
    peer.ontrack = (event) => {
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
    };
    peer.onconnectionstatechange = () => {
      if (peer === pc && (peer.connectionState === "failed" || peer.connectionState === "closed")) {
        reconnect("connection " + peer.connectionState);
      }
    };
    try {
      await peer.setLocalDescription(await peer.createOffer());
      await waitForGathering(peer);
      const response = await fetch(root + "/offer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: peer.localDescription.sdp, type: peer.localDescription.type }),
      });
      if (!response.ok) throw new Error(await response.text());
      if (peer === pc) await peer.setRemoteDescription(await response.json());
    } catch (error) {
      if (peer === pc) reconnect(error.message);
    }
  }

  function reconnect(reason) {
    const old = pc;
    pc = null;
    if (old) old.close();
    attempt += 1;
    const delay = Math.min(500 * 2 ** (attempt - 1), 8000);
    console.info("webgear-rtc: reconnecting in " + delay + " ms: " + reason);
    show("reconnecting", "reconnecting…");
    setTimeout(connect, delay);
  }

  video.addEventListener("playing", () => {
    attempt = 0;
    show("playing", "live");
  });

  // Frames decoded so far. A live stream's currentTime runs on even when no frame
  // arrives, so it cannot tell a frozen stream from a moving one.
  function progress() {
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return quality ? quality.totalVideoFrames : video.currentTime;
  }

  // A stream that shows no new frame for three seconds is as good as gone: the server may
  // have closed it, or the network dropped, before the connection state says so.
  setInterval(() => {
    if (!pc || !state || state.dataset.state !== "playing") return;
    const now = progress();
    if (now === lastProgress) {
      stalledSeconds += 1;
      if (stalledSeconds >= 3) {
        stalledSeconds = 0;
        reconnect("no new frames");
      }
    } else {
      stalledSeconds = 0;
      lastProgress = now;
    }
  }, 1000);

  window.addEventListener("pagehide", () => {
    navigator.sendBeacon(root + "/close_connection", "1");
  });

  connect();
})();
