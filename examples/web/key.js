// The publisher's public key (the `.pub` file `edgerec keygen` writes), shipped with the app's own
// code: with a key here, the page loads only bundles signed with it (app.js: signedDigests),
// never an older version than it ran last. null: unsigned bundles, checked for damage only.
window.EDGEREC_PUBLIC_KEY = null;
