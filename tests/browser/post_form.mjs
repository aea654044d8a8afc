// A browser upload with an HTML form and a signed POST policy, in real headless Chromium
// (Debian's /usr/bin/chromium) through playwright-core. Run by tests/python/test_post_object.py,
// which serves the form page (its fields from boto3's generate_presigned_post) from another
// origin and names a success_action_redirect page on that origin.
//
// The script opens the page, puts FILE into the form's file input, submits the form as a
// user would (a navigation, not fetch), waits for the page the upload lands on, and prints
// {url, title, text} as one JSON line on stdout.
//
// Env: PAGE_URL (the form page), FILE (the file to upload), CHROMIUM.

import { env, launch } from './launch.mjs';

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(env('PAGE_URL'));
  await page.setInputFiles('#file', env('FILE'));
  await Promise.all([
    page.waitForNavigation({ timeout: 30000 }),
    page.click('#submit'),
  ]);
  const text = await page.evaluate(() => document.body ? document.body.innerText : '');
  console.log(JSON.stringify({ url: page.url(), title: await page.title(), text }));
} finally {
  await browser.close();
}
