// Shared by the browser scripts: a required environment variable, and Debian's headless
// Chromium (CHROMIUM, default /usr/bin/chromium) launched through playwright-core.

import { chromium } from 'playwright-core';

export const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
  return v;
};

export const launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
