/** Small shared pieces: a status line, a confirming button, a one-time secret. */
import type { ComponentChildren } from 'preact';
import { useLayoutEffect, useRef, useState } from 'preact/hooks';

export interface Status {
  readonly kind: 'ok' | 'error' | 'busy';
  readonly text: string;
}

/** A live region: screen readers announce what an action did. */
export function StatusLine({ status }: { status: Status | null }) {
  return (
    <p class={`status ${status?.kind ?? ''}`} role={status?.kind === 'error' ? 'alert' : 'status'} aria-live="polite">
      {status?.text ?? ''}
    </p>
  );
}

/**
 * A button for an action that cannot be undone: the first press asks
 * ("Disconnect alice? Yes / Cancel"), the second does it.
 */
export function ConfirmButton(props: { label: string; question: string; onConfirm: () => void | Promise<void>; disabled?: boolean; danger?: boolean; name?: string }) {
  const [asking, setAsking] = useState(false);
  const yes = useRef<HTMLButtonElement>(null);
  const first = useRef<HTMLButtonElement>(null);
  const answered = useRef(false);
  // Focus moves to "Yes" when asked, and back to the button after Cancel.
  useLayoutEffect(() => {
    if (asking) yes.current?.focus();
    else if (answered.current) first.current?.focus();
  }, [asking]);
  if (!asking) {
    return (
      <button type="button" ref={first} class={props.danger === true ? 'danger' : ''} data-action={props.name} disabled={props.disabled} onClick={() => setAsking(true)}>
        {props.label}
      </button>
    );
  }
  return (
    <span class="confirm" role="group" aria-label={props.question}>
      <span class="question">{props.question}</span>
      <button
        type="button"
        class="danger"
        data-action={props.name === undefined ? undefined : `${props.name}-confirm`}
        ref={yes}
        onClick={() => {
          answered.current = true;
          setAsking(false);
          void props.onConfirm();
        }}
      >
        Yes, {props.label.charAt(0).toLowerCase() + props.label.slice(1)}
      </button>
      <button
        type="button"
        onClick={() => {
          answered.current = true;
          setAsking(false);
        }}
      >
        Cancel
      </button>
    </span>
  );
}

/** A secret shown once: selectable, with a copy button, and the warning that it will not be shown again. */
export function SecretOnce({ title, secret, keyName, note, onDone }: { title: string; secret: string; keyName?: string; note?: string; onDone: () => void }) {
  const [copied, setCopied] = useState(false);
  return (
    <section class="secret" aria-labelledby="secret-title" data-key={keyName}>
      <h3 id="secret-title">{title}</h3>
      <p>{note ?? 'Copy it now: Herald keeps only its hash and will not show it again.'}</p>
      <output class="secret-value" id="secret-value">{secret}</output>
      <div class="row">
        <button
          type="button"
          onClick={() => {
            void navigator.clipboard?.writeText(secret).then(
              () => setCopied(true),
              () => setCopied(false),
            );
          }}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
        <button type="button" onClick={onDone}>
          Done
        </button>
      </div>
    </section>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}
