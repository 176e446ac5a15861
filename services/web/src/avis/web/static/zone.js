// The browser's time zone, kept in a cookie so that the pages write times as the person reads
// a clock (web's rules.zone_of). A file of its own: the Content-Security-Policy allows no
// inline script.
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  // An IANA name needs no escaping (the server reads it as it is, and checks it).
  if (!zone || !/^[A-Za-z0-9_+\/-]+$/.test(zone)) return;
  if (document.cookie.indexOf("avis_zone=" + zone) !== -1) return;
  document.cookie = "avis_zone=" + zone + "; path=/; max-age=31536000; SameSite=Lax";
})();
