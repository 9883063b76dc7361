// The receivers of the seed documents, served on one loopback port for the
// integration tests. Each handler is the seed's code unchanged except for
// where it reads its secret; POST /__env sets those secrets, since the
// webhooks (and so their secrets) are created after this server starts.
import express from "express";
import crypto from "crypto";
import { Webhook } from "standardwebhooks";

const app = express();

app.post("/__env", express.json(), (req, res) => {
  Object.assign(process.env, req.body);
  res.json({ ok: true });
});

// Seed 001: reseller webhook receiver, verbatim (express.json, JSON.stringify).
app.post(
  "/webhooks/reseller",
  express.json({ limit: "50mb" }),
  (req, res) => {
    try {
      const webhookSecret = process.env.RESELLER_WEBHOOK_SECRET;
      if (!webhookSecret) {
        console.error("❌ RESELLER_WEBHOOK_SECRET env var is not set");
        return res.status(500).send("Webhook secret not configured");
      }
      const signature = req.headers["x-webhook-signature"];
      const timestamp = req.headers["x-webhook-timestamp"];
      if (!signature || !timestamp) {
        return res.status(400).send("Missing signature");
      }
      const payloadToSign = `${timestamp}.${JSON.stringify(req.body)}`;
      const expectedSignature = crypto
        .createHmac("sha256", webhookSecret)
        .update(payloadToSign)
        .digest("hex");
      if (
        !crypto.timingSafeEqual(
          Buffer.from(signature, "hex"),
          Buffer.from(expectedSignature, "hex"),
        )
      ) {
        return res.status(401).send("Invalid signature");
      }
      const event = req.body;
      switch (event.event) {
        case "desktop.app_tracking.captured":
          break;
        case "desktop.screenshot_tracking.captured":
          break;
        case "desktop.activity_tracking.captured":
          break;
        default:
          break;
      }
      return res.status(200).json({ received: true });
    } catch (error) {
      console.error("❌ [Reseller Webhook] error:", error);
      return res.status(500).send("Webhook processing failed");
    }
  },
);

// Seed 002: organisation webhook receiver over the raw body:
// HMAC_SHA256(timestamp + "." + body, WEBHOOK_SECRET) === x-webhook-signature.
app.post(
  "/webhooks/trackpilots",
  express.raw({ type: "application/json", limit: "50mb" }),
  (req, res) => {
    const signature = req.headers["x-webhook-signature"];
    const timestamp = req.headers["x-webhook-timestamp"];
    if (!signature || !timestamp) {
      return res.status(400).send("Missing signature");
    }
    const expected = crypto
      .createHmac("sha256", process.env.WEBHOOK_SECRET)
      .update(`${timestamp}.${req.body}`)
      .digest("hex");
    const ok =
      signature.length === expected.length &&
      crypto.timingSafeEqual(Buffer.from(signature), Buffer.from(expected));
    if (!ok) {
      return res.status(401).send("Invalid signature");
    }
    res.status(200).send("Webhook received and processed successfully");
  },
);

// Seed 004: Trackelio, X-Trackelio-Signature over the raw body.
function verifySignature(rawBody, secret, signatureHeader) {
  const computed = crypto
    .createHmac("sha256", secret)
    .update(rawBody)
    .digest("hex");
  return crypto.timingSafeEqual(
    Buffer.from(computed),
    Buffer.from(signatureHeader),
  );
}

app.post(
  "/webhooks/trackelio",
  express.json({ limit: "50mb", verify: (req, res, buf) => { req.rawBody = buf; } }),
  (req, res) => {
    const signature = req.headers["x-trackelio-signature"] || "";
    const isValid =
      signature.length === 64 &&
      verifySignature(req.rawBody, process.env.TRACKELIO_SECRET, signature);
    if (!isValid) {
      return res.status(401).send("Invalid signature");
    }
    res.status(200).send("OK");
  },
);

// Standard Webhooks, with the official verifier library.
app.post(
  "/webhooks/standard",
  express.raw({ type: "application/json", limit: "50mb" }),
  (req, res) => {
    try {
      new Webhook(process.env.STANDARD_SECRET).verify(req.body.toString("utf8"), req.headers);
      res.status(200).send("OK");
    } catch (e) {
      res.status(401).send(String(e));
    }
  },
);

const server = app.listen(0, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
