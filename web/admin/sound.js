// A short two-note chime made with WebAudio, so the dashboard ships no audio file. Browsers only let audio start
// after a user gesture, so the context is created on the first click or key press.

let context = null;

export function unlockSound() {
  const Ctor = window.AudioContext || window.webkitAudioContext;
  if (!Ctor) return;
  if (!context) context = new Ctor();
  if (context.state === "suspended") context.resume().catch(() => {});
}

export function chime() {
  if (!context || context.state !== "running") return;
  const start = context.currentTime + 0.01;
  [[880, 0], [1318.5, 0.11]].forEach(([freq, offset]) => {
    const osc = context.createOscillator();
    const gain = context.createGain();
    osc.type = "sine";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.12, start + offset + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.35);
    osc.connect(gain).connect(context.destination);
    osc.start(start + offset);
    osc.stop(start + offset + 0.4);
  });
}
