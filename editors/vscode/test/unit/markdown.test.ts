import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { extractCodeBlocks, renderMarkdown, renderPlain } from '../../src/lib/markdown';

describe('markdown -> safe HTML', () => {
  it('renders Markdown', () => {
    const html = renderMarkdown('# Title\n\nSome **bold** and `code`.\n\n- a\n- b');
    assert.match(html, /<h1>Title<\/h1>/);
    assert.match(html, /<strong>bold<\/strong>/);
    assert.match(html, /<code>code<\/code>/);
    assert.match(html, /<li>a<\/li>/);
  });

  it('escapes raw HTML from the model', () => {
    const html = renderMarkdown('<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\ntext <b onclick="x()">b</b>');
    assert.doesNotMatch(html, /<script|<img|<b /i);
    assert.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
    assert.match(html, /&lt;img src=x onerror=alert\(1\)&gt;/);
  });

  it('refuses script URLs and remote images', () => {
    const html = renderMarkdown('[a](javascript:alert(1)) [b](vbscript:x) [c](data:text/html,<b>) ![pixel](https://evil.example/p.png) [ok](https://example.com)');
    assert.doesNotMatch(html, /href="(javascript|vbscript|data):/i);
    assert.doesNotMatch(html, /<img/);
    assert.match(html, /\[image: pixel\]/);
    assert.match(html, /<a href="https:\/\/example.com" rel="noopener noreferrer">ok<\/a>/);
  });

  it('code blocks: escaped, labelled, with numbered actions', () => {
    const text = 'Fix:\n\n```python\nif a < b and c > "d":\n    pass\n```\n\nand\n\n```\nplain\n```';
    const html = renderMarkdown(text);
    assert.match(html, /<code class="language-python">if a &lt; b and c &gt; &quot;d&quot;:\n    pass\n<\/code>/);
    assert.match(html, /data-action="insert" data-block="0"/);
    assert.match(html, /data-action="apply" data-block="0"/);
    assert.match(html, /data-action="copy" data-block="1"/);
    assert.doesNotMatch(renderMarkdown(text, { actions: false }), /data-action/);
  });

  it('a hostile info string does not become an attribute', () => {
    const html = renderMarkdown('```js" onmouseover="alert(1)\nx\n```');
    assert.doesNotMatch(html, /onmouseover="/);
    assert.match(html, /<pre><code>x\n<\/code><\/pre>/);
  });

  it('an unclosed fence (still streaming) renders as code', () => {
    assert.match(renderMarkdown('Here:\n```ts\nconst a = 1;'), /<code class="language-ts">const a = 1;<\/code>/);
  });

  it('user text is shown as typed', () => {
    assert.equal(renderPlain('a <b>\n**c**'), '<p class="plain">a &lt;b&gt;<br>**c**</p>');
  });
});

describe('code block extraction', () => {
  it('finds fenced and indented blocks in render order, nested ones included', () => {
    const text = [
      'Intro',
      '',
      '```py',
      'print(1)',
      '```',
      '',
      '- step',
      '',
      '  ```js',
      '  a()',
      '  ```',
      '',
      '> ~~~rust',
      '> fn main() {}',
      '> ~~~',
      '',
      '    indented code',
      '',
      '````md',
      '```inner```',
      '````',
    ].join('\n');
    const blocks = extractCodeBlocks(text);
    assert.deepEqual(
      blocks.map((b) => [b.index, b.language, b.code]),
      [
        [0, 'py', 'print(1)\n'],
        [1, 'js', 'a()\n'],
        [2, 'rust', 'fn main() {}\n'],
        [3, '', 'indented code\n'],
        [4, 'md', '```inner```\n'],
      ],
    );
    const html = renderMarkdown(text);
    for (const b of blocks) assert.match(html, new RegExp(`data-block="${b.index}"`));
    assert.doesNotMatch(html, /data-block="5"/);
  });

  it('no code, no blocks', () => {
    assert.deepEqual(extractCodeBlocks('just `inline` code'), []);
  });
});
