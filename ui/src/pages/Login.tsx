import { useState } from 'preact/hooks';
import * as api from '../api';

export function Login({ done }: { done(): void }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  document.title = 'Log in · sightflow';
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      await api.login(email.trim(), password);
      setPassword('');
      done();
    } catch (err) {
      const a = err as api.ApiError;
      setError(a.status === 401 ? 'Wrong email or password.' : a.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={submit} aria-labelledby="login-title">
        <div class="brand big">
          <span class="dot" aria-hidden="true" /> sightflow
        </div>
        <h1 id="login-title">Log in to the console</h1>
        <label>
          Email
          <input type="email" name="email" autoComplete="username" required autoFocus value={email} onInput={(e) => setEmail((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Password
          <input type="password" name="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} />
        </label>
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <p class="hint">
          The first owner's password is printed once when the server first starts. Other people get theirs from an admin (Settings → Members).
        </p>
      </form>
    </main>
  );
}
