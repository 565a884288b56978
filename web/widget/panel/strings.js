// The panel's words, in the languages it speaks.

export const STRINGS = {
  en: {
    placeholder: "Write a message…", send: "Send", close: "Close chat", online: "Online", away: "Away",
    connecting: "Connecting…", reconnecting: "Reconnecting…", typing: "typing…", seen: "Seen", sending: "Sending…",
    failed: "Not sent", retry: "Retry", identify: "Add your name", edit: "Change", name: "Your name",
    email: "Email (optional)", save: "Save", cancel: "Cancel", hello: "Hi {name}", log: "Messages",
    hint: "Enter to send, Shift+Enter for a new line", powered: "Powered by natter", unavailable: "Chat unavailable",
    notify: "Notify me of replies", notSetUp: "The chat is not set up for this site yet.",
    emailOffer: "Leave your email and we'll reply there too",
    emailUse: "We only use your email to send you our replies while you're away, and you can stop them in one click.",
  },
  de: {
    placeholder: "Nachricht schreiben…", send: "Senden", close: "Chat schließen", online: "Online",
    away: "Abwesend", connecting: "Verbinde…", reconnecting: "Verbindung wird wiederhergestellt…",
    typing: "schreibt…", seen: "Gelesen", sending: "Wird gesendet…", failed: "Nicht gesendet",
    retry: "Erneut senden", identify: "Namen angeben", edit: "Ändern", name: "Dein Name",
    email: "E-Mail (optional)", save: "Speichern", cancel: "Abbrechen", hello: "Hallo {name}", log: "Nachrichten",
    hint: "Enter zum Senden, Umschalt+Enter für eine neue Zeile", powered: "Mit natter",
    unavailable: "Chat nicht verfügbar", notify: "Bei Antwort benachrichtigen",
    notSetUp: "Der Chat ist für diese Seite noch nicht eingerichtet.",
    emailOffer: "E-Mail hinterlassen, dann antworten wir auch dort",
    emailUse: "Wir nutzen deine E-Mail nur, um dir unsere Antworten zu schicken, wenn du weg bist; abbestellen mit einem Klick.",
  },
  fr: {
    placeholder: "Écrivez un message…", send: "Envoyer", close: "Fermer le chat", online: "En ligne",
    away: "Absent", connecting: "Connexion…", reconnecting: "Reconnexion…", typing: "écrit…", seen: "Vu",
    sending: "Envoi…", failed: "Non envoyé", retry: "Réessayer", identify: "Indiquer votre nom",
    edit: "Modifier", name: "Votre nom", email: "E-mail (facultatif)", save: "Enregistrer", cancel: "Annuler",
    hello: "Bonjour {name}", log: "Messages", hint: "Entrée pour envoyer, Maj+Entrée pour une nouvelle ligne",
    powered: "Propulsé par natter", unavailable: "Chat indisponible", notify: "Me prévenir des réponses",
    notSetUp: "Le chat n’est pas encore configuré pour ce site.",
    emailOffer: "Laissez votre e-mail, nous y répondrons aussi",
    emailUse: "Votre e-mail sert uniquement à vous envoyer nos réponses quand vous êtes parti ; désinscription en un clic.",
  },
  es: {
    placeholder: "Escribe un mensaje…", send: "Enviar", close: "Cerrar chat", online: "En línea",
    away: "Ausente", connecting: "Conectando…", reconnecting: "Reconectando…", typing: "escribiendo…",
    seen: "Visto", sending: "Enviando…", failed: "No enviado", retry: "Reintentar", identify: "Añade tu nombre",
    edit: "Cambiar", name: "Tu nombre", email: "Correo (opcional)", save: "Guardar", cancel: "Cancelar",
    hello: "Hola {name}", log: "Mensajes", hint: "Intro para enviar, Mayús+Intro para una nueva línea",
    powered: "Con natter", unavailable: "Chat no disponible", notify: "Avisarme de las respuestas",
    notSetUp: "El chat aún no está configurado para este sitio.",
    emailOffer: "Deja tu correo y te responderemos también allí",
    emailUse: "Solo usamos tu correo para enviarte nuestras respuestas cuando no estés; puedes darte de baja con un clic.",
  },
};

// The owner's language setting wins; otherwise the first of the browser's languages that we speak.
export function language(cfg) {
  const wanted = cfg.language && cfg.language !== "auto" ? [cfg.language] : navigator.languages || [navigator.language];
  return wanted.map((l) => String(l || "").slice(0, 2).toLowerCase()).find((l) => STRINGS[l]) || "en";
}
