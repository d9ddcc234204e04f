"""The style sheet of card.html (inlined in the page: the card loads no external assets). Screen and print: in print
the summary ends the first page, and table rows, chips and figures are not split across pages.
"""

STYLE = """
:root{--ok:#1a7f37;--bad:#cf222e;--nm:#9a6700;--muted:#57606a;--line:#d0d7de}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1120px;\
margin:1.5em auto;padding:0 1em;color:#1f2328;
 font-size:14px;line-height:1.45}
h1{font-size:24px;margin:0 0 .2em}h2{font-size:18px;margin:1.6em 0 .5em;padding-bottom:.2em;\
border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:1.1em 0 .4em}
.meta{color:var(--muted);font-size:12px}
table{border-collapse:collapse;margin:.5em 0 1em;width:100%}
th,td{border:1px solid var(--line);padding:3px 6px;font-size:12.5px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
code,.digest{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px}
.digest{word-break:break-all}
.chip{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;border:1px solid;\
white-space:nowrap}
.chip.passed,.chip.approved{color:var(--ok);border-color:var(--ok);background:#dafbe1}
.chip.failed,.chip.rejected{color:var(--bad);border-color:var(--bad);background:#ffebe9}
.chip.not-measured,.chip.pending{color:var(--nm);border-color:var(--nm);background:#fff8c5}
.summary{border:2px solid #1f2328;border-radius:8px;padding:12px 16px;margin:1em 0}
.summary h2{margin-top:.2em;border:0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:6px 24px}
.grid>div>h3{margin-top:.3em}
.why{color:var(--muted);font-size:12px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.4em 0}
dl.kv dt{font-weight:600}dl.kv dd{margin:0}
ul{margin:.3em 0 .6em;padding-left:1.3em}
figure{margin:.5em 0}
img.chart{max-width:600px;width:100%}
svg.chain{width:100%;height:auto}
svg.chain text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px}
svg.chain .title{font-family:system-ui,Helvetica,Arial,sans-serif;font-size:12px;font-weight:600}
a{color:#0969da}
@page{size:A4;margin:14mm 12mm 16mm}
@media print{
 body{max-width:none;margin:0;padding:0;font-size:10pt}
 .summary{break-after:page;border-width:1.5px}
 h2,h3{break-after:avoid}
 tr,td,th,.chip,dl.kv,figure,svg,li{break-inside:avoid}
 thead{display:table-header-group}
 section{break-inside:auto}
 a{color:inherit;text-decoration:none}
 th,td{font-size:8.5pt}
}
"""
